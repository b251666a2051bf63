"""torchrun with 2 gloo processes on the CPU computes what one process computes on the global batch."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from dsol_lite.config import with_overrides
from dsol_lite.distributed import GlobalBatchNorm2d, Ranks, check_batch_size, shard, sync_batchnorm
from dsol_lite.errors import ConfigError
from dsol_lite.objectives import stage_one_loss, stage_two_loss
from dsol_lite.stage_one import STAGE_ONE_PRESETS, StageOneTrainer

sys.path.insert(0, str(Path(__file__).parent))
from ddp_step_worker import tiny_audio_probs, tiny_batch, tiny_model, tiny_stage_two  # noqa: E402

WORKER = Path(__file__).with_name("ddp_step_worker.py")


def torchrun(*args: str, cwd: Path) -> None:
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *args]
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def assert_close(ours: dict, ref: dict, rtol: float = 1e-4, atol: float = 1e-7) -> None:
    """Every tensor within ``rtol`` of its largest entry (``atol`` for gradients that are zero up to
    rounding, like stage two's logit bias: a shift of every class logit leaves the softmax as is)."""
    assert ours.keys() == ref.keys()
    for name in ref:
        assert (ours[name] - ref[name]).abs().max() <= rtol * ref[name].abs().max() + atol, name


def test_one_step_on_two_ranks_equals_one_process(tmp_path):
    """Gradients of every parameter: localization (negatives from the other rank's clips, global
    BatchNorm statistics), pseudo-label classification (DDP over backbones and heads) and stage two
    (KL per rank, localization over the gathered batch)."""
    torchrun(str(WORKER), str(tmp_path), cwd=tmp_path)
    got = torch.load(tmp_path / "grads.pt", weights_only=True)

    model = tiny_model().train()  # plain BatchNorm on the whole batch
    images, mel, labels = tiny_batch()
    loss, _ = stage_one_loss(model, model.encode(images, mel), negatives="all")
    loss.backward()
    localize = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    v_logits, a_logits = model.classify(images, mel)
    (F.cross_entropy(v_logits, labels) + F.cross_entropy(a_logits, labels)).backward()
    classify = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    assert torch.allclose(got["loss"], loss.detach(), rtol=1e-6)
    assert "scale" in got["localize"] and "a_classifier.weight" in got["classify"]
    assert_close(got["localize"], localize)
    assert_close(got["classify"], classify)
    assert_close(got["running"], {k: v for k, v in model.state_dict().items() if "running" in k})

    two = tiny_stage_two().train()
    loss2, _ = stage_two_loss(two, two(images, mel), tiny_audio_probs())
    loss2.backward()
    assert_close(got["stage_two"], {n: p.grad for n, p in two.named_parameters() if p.grad is not None})
    assert "obj_weight" in got["stage_two"] and "net.v_classifier.weight" not in got["stage_two"]


def localize_losses(run: Path) -> list[float]:
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in records if r["phase"] == "localize"]


def test_torchrun_stage_one_follows_the_one_process_loss_curve(tiny_world, tmp_path):
    """``dsol-lite stage-one`` under torchrun: the same loss curve as one process (float rounding
    differs, and Adam amplifies it step by step: measured, one process on 1 vs 2 threads drifts
    apart as much), one log and one set of checkpoints that a single process can resume."""
    settings = ["width=8", "image_size=64", "eval_size=80", "epochs=2", "batch_size=8", "class_passes=1",
                "lr=1e-4", "scale_lr_mult=1", "class_lr=1e-4", "rounds=every", "checkpoint_every=2"]
    args = [a for s in settings for a in ("--set", s)]
    cli = ["-m", "dsol_lite.cli", "stage-one", str(tiny_world)]
    torchrun(*cli, str(tmp_path / "two"), "--preset", "quick", *args, "--no-progress", cwd=tmp_path)
    cfg = with_overrides(STAGE_ONE_PRESETS["quick"], settings)
    one = StageOneTrainer(tiny_world, tmp_path / "one", cfg, torch.device("cpu"), progress_bar=False)
    one.fit()

    a, b = localize_losses(tmp_path / "one"), localize_losses(tmp_path / "two")
    assert len(a) == len(b) == 2 * (48 // 8)  # rank 1 wrote nothing: no duplicated records
    per_epoch = len(a) // 2
    assert torch.allclose(torch.tensor(b[:per_epoch]), torch.tensor(a[:per_epoch]), rtol=1e-4)
    assert torch.allclose(torch.tensor(b), torch.tensor(a), rtol=1e-2)

    resumed = StageOneTrainer(tiny_world, tmp_path / "two", cfg, torch.device("cpu"), progress_bar=False)
    assert resumed.progress.epoch == 2 and resumed.fit()["epochs"] == 2  # finished: nothing left to do
    assert (tmp_path / "two" / "dictionary.pt").exists() and (tmp_path / "two" / "best.pt").exists()
    print("relative loss differences:", [f"{abs(x - y) / y:.1e}" for x, y in zip(b, a)])


def test_torchrun_one_round_with_a_moving_average(tiny_world, tmp_path):
    """The quick preset's one clustering round (``rounds="best"``) under torchrun, with ``ema_decay``:
    the other ranks wait for rank 0's ``best.pt`` before the round loads it, one rank writes each
    round file, every rank averages the same synchronised weights (SyncBatchNorm buffers included),
    and the saved average matches one process's as closely as float rounding allows."""
    settings = ["width=8", "image_size=64", "eval_size=80", "epochs=2", "batch_size=8", "class_passes=1",
                "lr=1e-4", "scale_lr_mult=1", "ema_decay=0.9", "checkpoint_every=2"]
    args = [a for s in settings for a in ("--set", s)]
    torchrun("-m", "dsol_lite.cli", "stage-one", str(tiny_world), str(tmp_path / "two"), "--preset", "quick",
             *args, "--no-progress", cwd=tmp_path)
    cfg = with_overrides(STAGE_ONE_PRESETS["quick"], settings)
    one = StageOneTrainer(tiny_world, tmp_path / "one", cfg, torch.device("cpu"), progress_bar=False)
    one.fit()

    two = StageOneTrainer(tiny_world, tmp_path / "two", cfg, torch.device("cpu"), progress_bar=False)
    assert two.progress.epoch == 2 and int(two.average.n_averaged) == 12  # every localize step, counted once
    average = two.average.module.state_dict()
    best = two.ckpt.load("best")["model"]  # 2 epochs: epoch 1, the last, is the only one with a dictionary
    trunk = [k for k in best if not k.startswith(("v_classifier.", "a_classifier."))]  # heads: its round's
    assert best.keys() == average.keys() and all(torch.equal(best[k], average[k]) for k in trunk)
    reference = one.average.module.state_dict()
    # the runs differ by float rounding, which Adam turns into up to a step (lr = 1e-4) per weight
    assert_close({k: v for k, v in average.items() if v.is_floating_point()},
                 {k: v for k, v in reference.items() if v.is_floating_point()}, rtol=1e-3, atol=1e-4)


def test_global_batchnorm_is_plain_batchnorm_in_one_process():
    x = torch.randn(6, 4, 5, 5)
    plain, ours = torch.nn.BatchNorm2d(4), GlobalBatchNorm2d(4)
    assert torch.equal(plain(x), ours(x))
    model = sync_batchnorm(tiny_model(), torch.device("cpu"))
    kinds = {type(m) for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)}
    assert kinds == {GlobalBatchNorm2d}
    weights = {n: p for n, p in tiny_model().state_dict().items()}
    assert all(torch.equal(model.state_dict()[n], w) for n, w in weights.items())  # same state, same names


def test_shares_and_bad_batch_sizes(tiny_world, tmp_path):
    assert shard(list(range(8)), Ranks(1, 2, 1)) == [4, 5, 6, 7]
    with pytest.raises(ConfigError, match="cannot be split evenly over 3"):
        shard(list(range(8)), Ranks(0, 3, 0))
    check_batch_size(16, Ranks(0, 2, 0), per_rank_multiple=4)  # shares of 8: fine
    with pytest.raises(ConfigError, match=r"share must be a multiple of 4, so use a multiple of 8$"):
        check_batch_size(12, Ranks(0, 2, 0), per_rank_multiple=4)
    cfg = with_overrides(STAGE_ONE_PRESETS["quick"], ["width=8", "image_size=64", "batch_size=6", "mosaic=false"])
    with pytest.raises(ConfigError, match="batch_size=6 cannot be split evenly over 4 processes"):
        StageOneTrainer(tiny_world, tmp_path, cfg, torch.device("cpu"), ranks=Ranks(0, 4, 0))


def test_set_overrides_read_the_field_types():
    cfg = with_overrides(STAGE_ONE_PRESETS["quick"], ["epochs=3", "lr=2e-4", "class_lr=none", "rounds=every",
                                                      "imagenet=false", "prepared=data/cache"])
    assert (cfg.epochs, cfg.lr, cfg.class_lr, cfg.imagenet, cfg.prepared) == (3, 2e-4, None, False, "data/cache")
    with pytest.raises(ConfigError, match="KEY one of"):
        with_overrides(cfg, ["epoch=3"])
    with pytest.raises(ConfigError, match="epochs is int"):
        with_overrides(cfg, ["epochs=three"])


def test_peer_methods_refuse_torchrun(monkeypatch, capsys):
    from dsol_lite.cli import main

    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["run", "--method", "fnac", "--no-progress"]) == 2
    assert "only DSOL" in capsys.readouterr().err


def train_losses(run: Path, phase: str) -> list[float]:
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in records if r["phase"] == phase]


def test_torchrun_pipeline_follows_one_process(tiny_world, tmp_path):
    """``dsol-lite run`` under torchrun: both stages on 2 ranks, rank 0 evaluates and reports; the
    stage-two loss (KL on each rank's scenes, localization over the gathered batch) follows one
    process on the global batch."""
    from dsol_lite.pipeline import run_pipeline
    from dsol_lite.stage_two import STAGE_TWO_PRESETS

    one = ["width=8", "image_size=64", "eval_size=80", "epochs=2", "batch_size=8", "class_passes=1", "lr=1e-4",
           "scale_lr_mult=1", "checkpoint_every=2"]
    two = ["batch_size=8", "epochs=2", "warmup_epochs=1", "checkpoint_every=2", "eval_size=none"]
    args = [a for s in one for a in ("--set", f"stage_one.{s}")] + [a for s in two for a in ("--set", f"stage_two.{s}")]
    s1 = with_overrides(STAGE_ONE_PRESETS["quick"], one)
    s2 = with_overrides(STAGE_TWO_PRESETS["quick"], two)
    run_pipeline("quick", tiny_world, tmp_path, "one", torch.device("cpu"), False, s1, s2)
    shutil.copytree(tmp_path / "one" / "stage_one", tmp_path / "two" / "stage_one")  # stage two from the same start
    torchrun("-m", "dsol_lite.cli", "run", "--preset", "quick", "--world", str(tiny_world), "--runs", str(tmp_path),
             "--name", "two", *args, "--no-progress", cwd=tmp_path)

    a, b = train_losses(tmp_path / "one" / "stage_two", "train"), train_losses(tmp_path / "two" / "stage_two", "train")
    assert len(a) == len(b) == 2 * (24 // 8)
    assert torch.allclose(torch.tensor(b[:3]), torch.tensor(a[:3]), rtol=1e-4)
    assert torch.allclose(torch.tensor(b), torch.tensor(a), rtol=1e-2)
    print("stage two relative loss differences:", [f"{abs(x - y) / y:.1e}" for x, y in zip(b, a)])
    assert (tmp_path / "two" / "report.md").is_file() and (tmp_path / "two" / "metrics.json").is_file()
    # which stages each invocation ran from their start (only those are timed against the course's targets)
    fresh = {name: json.loads((tmp_path / name / "metrics.json").read_text())["setup"]["fresh"]
             for name in ("one", "two")}
    assert fresh["one"] == {"world": False, "stage_one": True, "stage_two": True}
    assert fresh["two"] == {"world": False, "stage_one": False, "stage_two": True}
    report = (tmp_path / "one" / "report.md").read_text()
    assert "| stage one + dictionary <= 6 minutes | " in report and "made or begun earlier" not in report
    assert "world or a stage made earlier: not timed" in report
