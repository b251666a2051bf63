"""Commands a new user gets wrong: nothing is lost, nothing is half-written, every message is clear.

One test (or more) per case of the bad-input sweep: folders the package did not make are never
deleted, a replaced world or cache is whole at every moment, one writer per folder, stale caches
are refused, impossible settings are refused before anything trains, and faults of the run
folder (read-only, full disk, a cut log line) end in a message naming the file.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from PIL import Image, ImageOps

from dsol_lite import folders
from dsol_lite.cli import main
from dsol_lite.data.datasets import SoloPairs
from dsol_lite.data.prepared import build_cache, open_cache
from dsol_lite.data.schema import read_manifest
from dsol_lite.errors import ConfigError, DataError, StorageError
from dsol_lite.folders import BusyError
from dsol_lite.synth.config import preset
from dsol_lite.synth.writer import generate_world, is_complete
from dsol_lite.training import MetricsLog, atomic_torch_save

SMALL = {"solo": (8, 2, 2), "duet": (2, 0, 0), "cocktail": (2, 0, 0), "grid2x2": (2, 0, 0)}
TINY_RUN = ["--set", "stage_one.width=8", "--set", "stage_one.image_size=64", "--set", "stage_one.eval_size=80",
            "--set", "stage_one.epochs=2", "--set", "stage_one.batch_size=8", "--set", "stage_one.class_passes=1",
            "--set", "stage_one.checkpoint_every=2", "--set", "stage_two.batch_size=8", "--set",
            "stage_two.epochs=2", "--set", "stage_two.warmup_epochs=1", "--set", "stage_two.checkpoint_every=2",
            "--set", "stage_two.eval_size=96", "--device", "cpu", "--no-progress"]


def _precious(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sub").mkdir(exist_ok=True)
    (folder / "thesis.tex").write_text("precious")
    return folder / "thesis.tex"


def _error(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


# ---- S1, S2: synth --overwrite deletes only worlds it generated ----------------------------------

def test_overwrite_refuses_a_folder_that_is_not_a_world(tmp_path, capsys):
    thesis = _precious(tmp_path / "mydata")
    code = main(["synth", "--preset", "sample", "--out", str(tmp_path / "mydata"), "--overwrite", "--workers", "1",
                 "--no-progress"])
    assert code == 2 and "holds files that dsol_lite did not write" in _error(capsys)
    assert thesis.read_text() == "precious" and (tmp_path / "mydata" / "sub").is_dir()


def test_overwrite_refuses_the_current_folder_and_its_parents(tmp_path, monkeypatch, capsys):
    work = tmp_path / "work"
    thesis = _precious(work)
    generate_world(preset("tiny", counts=SMALL), work / "w", workers=1, progress=False)
    monkeypatch.chdir(work / "w")  # even a world: never the folder one stands in, nor a parent of it
    for out in (".", "..", str(work)):
        assert main(["synth", "--preset", "tiny", "--out", out, "--overwrite", "--workers", "1", "--no-progress"]) == 2
        assert "is the current folder or holds it" in _error(capsys)
    assert thesis.read_text() == "precious" and is_complete(work / "w", preset("tiny", counts=SMALL))


def test_overwrite_replaces_a_generated_world_and_an_empty_folder(tmp_path):
    old, new = preset("tiny", counts=SMALL), preset("tiny", counts=SMALL, seed=5)
    generate_world(old, tmp_path / "w", workers=1, progress=False)
    with pytest.raises(ConfigError, match="pass overwrite=True"):
        generate_world(new, tmp_path / "w", workers=1, progress=False)
    generate_world(new, tmp_path / "w", workers=1, progress=False, overwrite=True)
    assert is_complete(tmp_path / "w", new) and sorted(p.name for p in tmp_path.iterdir()) == ["w"]
    (tmp_path / "empty").mkdir()
    assert is_complete(generate_world(old, tmp_path / "empty", workers=1, progress=False), old)


# ---- F2b: a kill while a world is replaced leaves the old world or the new one whole ------------

def test_replacing_a_world_is_whole_at_every_step(tmp_path, monkeypatch):
    old, new = preset("tiny", counts=SMALL), preset("tiny", counts=SMALL, seed=5)
    out = tmp_path / "w"
    generate_world(old, out, workers=1, progress=False)
    real_replace, real_rmtree = os.replace, shutil.rmtree

    def killed_at_second_rename(src, dst):  # the old world is moved aside, the new one not yet in place
        if Path(dst) == out.resolve() and ".tmp-" in str(src):
            raise KeyboardInterrupt
        return real_replace(src, dst)

    monkeypatch.setattr(folders.os, "replace", killed_at_second_rename)
    with pytest.raises(KeyboardInterrupt):
        generate_world(new, out, workers=1, progress=False, overwrite=True)
    monkeypatch.setattr(folders.os, "replace", real_replace)
    assert is_complete(out, old) and sorted(p.name for p in tmp_path.iterdir()) == ["w"]

    def killed_while_deleting_the_old(path, *args, **kwargs):
        if ".replaced-" in str(path) and (Path(path) / "dataset.json").exists():
            (Path(path) / "dataset.json").unlink()  # half deleted
            raise KeyboardInterrupt
        return real_rmtree(path, *args, **kwargs)

    monkeypatch.setattr(folders.shutil, "rmtree", killed_while_deleting_the_old)
    with pytest.raises(KeyboardInterrupt):
        generate_world(new, out, workers=1, progress=False, overwrite=True)
    monkeypatch.setattr(folders.shutil, "rmtree", real_rmtree)
    assert is_complete(out, new)
    generate_world(new, out, workers=1, progress=False)  # the next writer clears the half-deleted old world
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w"]


def test_a_real_kill_mid_overwrite_keeps_the_old_world(tmp_path):
    out = tmp_path / "w"
    counts = {"solo": (60, 2, 2), "duet": (2, 0, 0), "cocktail": (2, 0, 0), "grid2x2": (2, 0, 0)}
    generate_world(preset("tiny", counts=counts), out, workers=1, progress=False)
    code = ("import sys\nfrom dsol_lite.synth.config import preset\nfrom dsol_lite.synth.writer import generate_world\n"
            f"generate_world(preset('tiny', seed=3, counts={counts!r}), sys.argv[1], workers=1, progress=False, "
            "overwrite=True)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(out)])
    deadline = time.time() + 60
    while time.time() < deadline and len(list(tmp_path.glob(".w.tmp-*/clips/*"))) < 5:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert is_complete(out, preset("tiny", counts=counts))  # the old world, untouched
    generate_world(preset("tiny", seed=3, counts=counts), out, workers=1, progress=False, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w"]  # the killed writer's leftovers are gone


# ---- F5, F6: one writer per world and per run folder ------------------------------------------

def _hold_lock(folder: Path) -> subprocess.Popen:
    code = ("import sys, time\nfrom dsol_lite.folders import exclusive\n"
            "with exclusive(sys.argv[1], 'a test'):\n    print('held', flush=True)\n    time.sleep(120)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(folder)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_writer_of_a_world_is_refused_with_the_holder(tmp_path, capsys):
    holder = _hold_lock(tmp_path / "q")
    try:
        with pytest.raises(BusyError, match=f"being written by pid {holder.pid}"):
            generate_world(preset("tiny", counts=SMALL), tmp_path / "q", workers=1, progress=False)
        assert main(["synth", "--preset", "tiny", "--out", str(tmp_path / "q"), "--workers", "1", "--no-progress"]) == 2
        assert f"pid {holder.pid}" in _error(capsys)
    finally:
        holder.kill()
        holder.wait()
    # the holder was killed: the operating system released its lock, nothing stale is left
    assert is_complete(generate_world(preset("tiny", counts=SMALL), tmp_path / "q", workers=1, progress=False),
                       preset("tiny", counts=SMALL))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["q"]


def test_a_second_run_of_one_run_folder_is_refused(tiny_world, tmp_path, capsys):
    holder = _hold_lock(tmp_path / "runs" / "same")
    try:
        code = main(["run", "--world", str(tiny_world), "--runs", str(tmp_path / "runs"), "--name", "same", *TINY_RUN])
        assert code == 2 and f"being written by pid {holder.pid}" in _error(capsys)
        assert not (tmp_path / "runs" / "same").exists()
    finally:
        holder.kill()
        holder.wait()


def test_the_lock_is_reentrant_in_one_process_and_released_after(tmp_path):
    with folders.exclusive(tmp_path / "x", "a test"):
        with folders.exclusive(tmp_path / "x", "a test"):
            assert (tmp_path / ".x.dsol-lock").exists()
    assert not (tmp_path / ".x.dsol-lock").exists()


# ---- K1, K1b, K3: the prepared cache ------------------------------------------------------------

def test_cache_never_replaces_the_dataset_or_a_foreign_folder(tiny_world, tmp_path, capsys):
    world = Path(shutil.copytree(tiny_world, tmp_path / "w"))
    assert main(["cache", str(world), str(world), "--image-size", "64", "--no-progress"]) == 2
    assert "is, holds or lies inside the input" in _error(capsys)
    assert main(["cache", str(world), str(world / "clips" / "c"), "--image-size", "64", "--no-progress"]) == 2
    assert read_manifest(world).clips and not (world / "clips" / "c").exists()
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "a.txt").write_text("important")
    assert main(["cache", str(world), str(notes), "--image-size", "64", "--no-progress"]) == 2
    assert "did not write" in _error(capsys) and (notes / "a.txt").read_text() == "important"
    assert main(["cache", str(world), str(tmp_path / "c"), "--image-size", "64", "--no-progress"]) == 0
    assert main(["cache", str(world), str(tmp_path / "c"), "--image-size", "80", "--no-progress"]) == 0  # a rebuild
    assert open_cache(tmp_path / "c", read_manifest(world), 80).image_size == 80
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c", "notes", "w"]


def test_a_cache_whose_sources_changed_is_refused(tiny_world, tmp_path):
    world = Path(shutil.copytree(tiny_world, tmp_path / "w"))
    build_cache(world, tmp_path / "c", 64, progress=False)
    manifest = read_manifest(world)
    assert open_cache(tmp_path / "c", manifest, 64)
    frame = world / "clips" / "solo-train-00003" / "frame_000.jpg"
    ImageOps.invert(Image.open(frame)).save(frame)
    with pytest.raises(DataError, match="1 of the files it was built from changed since .*solo-train-00003/frame_000"):
        open_cache(tmp_path / "c", manifest, 64)
    (world / "clips" / "solo-val-00000" / "audio.wav").unlink()
    with pytest.raises(DataError, match="2 of the files .*Rebuild it: dsol-lite cache"):
        SoloPairs(world, "train", image_size=64, prepared=tmp_path / "c")


# ---- C12: --set and --prepared with a peer method --------------------------------------------

def test_peer_methods_honour_set_and_prepared(tiny_world, tmp_path, capsys):
    runs = tmp_path / "runs"
    base = ["run", "--method", "ezvsl", "--world", str(tiny_world), "--runs", str(runs), "--device", "cpu",
            "--no-progress"]
    assert main(base + ["--set", "stage_one.epochs=1"]) == 2
    assert "write --set epochs=1" in _error(capsys)
    assert main(base + ["--set", "totally_bogus"]) == 2
    assert "expected KEY=VALUE with KEY one of method, width" in _error(capsys)
    assert main(base + ["--set", "tau=-1"]) == 2 and "tau=-1.0: must be a finite number > 0" in _error(capsys)
    build_cache(tiny_world, tmp_path / "c80", 80, progress=False)
    tiny = ["--set", "epochs=1", "--set", "width=8", "--set", "image_size=64", "--set", "batch_size=8",
            "--set", "steps_per_epoch=2"]
    assert main(base + tiny + ["--prepared", str(tmp_path / "c80")]) == 2  # the cache is used: its size is wrong
    assert "it holds 80 px frames, training uses 64 px" in _error(capsys)
    build_cache(tiny_world, tmp_path / "c64", 64, progress=False)
    assert main(base + tiny + ["--prepared", str(tmp_path / "c64")]) == 0
    payload = torch.load(runs / "quick-ezvsl" / "train" / "last.pt", weights_only=True)
    settings = json.loads(payload["fingerprint"])
    assert (settings["width"], settings["epochs"], settings["image_size"], settings["steps_per_epoch"]) == (8, 1, 64, 2)


# ---- I6b: a bad file, found before training starts ----------------------------------------------

def test_a_missing_frame_is_named_before_anything_trains(tiny_world, tmp_path, capsys):
    world = Path(shutil.copytree(tiny_world, tmp_path / "w"))
    (world / "clips" / "solo-train-00003" / "frame_000.jpg").unlink()
    with pytest.raises(DataError, match="solo-train-00003/frame_000.jpg: image file is missing"):
        SoloPairs(world, "train", image_size=64)  # the store decodes the split when a dataset opens it
    code = main(["run", "--world", str(world), "--runs", str(tmp_path / "r"), *TINY_RUN])
    assert code == 2 and "frame_000.jpg: image file is missing" in _error(capsys)
    assert not (tmp_path / "r" / "quick" / "stage_one" / "last.pt").exists()


# ---- J8, J8d: --world that is not a world -------------------------------------------------------

def test_run_with_a_world_folder_that_is_not_a_dataset(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notaworld").mkdir()
    (tmp_path / "notaworld" / "notes.txt").write_text("mine")
    assert main(["run", "--world", "notaworld", "--runs", "r", "--device", "cpu", "--no-progress"]) == 2
    err = _error(capsys)
    assert "notaworld: not a dataset (no dataset.json) and not empty" in err and "--overwrite" not in err
    (tmp_path / "tiny").mkdir()
    assert main(["run", "--world", "tinyy", "--runs", "r", "--device", "cpu", "--no-progress"]) == 2
    assert "--world tinyy: no such folder (did you mean tiny?)" in _error(capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notaworld", "tiny"]  # nothing generated, no run folder


# ---- C2d, C5, C5b, C5c, C6b, C7b, C13: settings refused before anything trains -------------------

@pytest.mark.parametrize("setting, message", [
    ("stage_two.kinds=banjo", "stage_two.kinds=('banjo',): choose from"),
    ("stage_one.lr=-1e-3", "stage_one.lr=-0.001: must be a finite number > 0"),
    ("stage_two.lr=-1e-3", "stage_two.lr=-0.001: must be a finite number > 0"),
    ("stage_one.lr=nan", "stage_one.lr=nan: must be a finite number > 0"),
    ("stage_two.warmup_epochs=2", "stage_two.warmup_epochs=2 with epochs=2: only epochs after the warm-up"),
    ("stage_one.image_size=0", "stage_one.image_size=0: must be a whole number >= 32"),
    ("stage_one.seed=-1", "stage_one.seed=-1: must be a whole number >= 0"),
    ("stage_one.checkpoint_every=0", "stage_one.checkpoint_every=0: must be a whole number >= 1"),
    ("stage_two.fnac=1", "--set stage_two.fnac=1: expected stage_two.KEY=VALUE"),
])
def test_impossible_settings_are_refused_up_front(tiny_world, tmp_path, capsys, setting, message):
    code = main(["run", "--world", str(tiny_world), "--runs", str(tmp_path / "r"), *TINY_RUN, "--set", setting])
    assert code == 2 and message in _error(capsys)
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("options", [["--sweep-epochs", "0"], ["--sweep-epochs", "9"],
                                     ["--sweep-epochs", "2", "--no-tune"]])
def test_compare_refuses_an_impossible_sweep_before_anything_runs(tmp_path, capsys, options):
    code = main(["compare", "--runs", str(tmp_path / "r"), "--world", str(tmp_path / "w"), "--no-progress", *options])
    assert code == 2 and f"--sweep-epochs {options[1]}: the sweep's epochs per configuration" in _error(capsys)
    assert list(tmp_path.iterdir()) == []


def test_tuple_settings_from_the_command_line():
    from dsol_lite.cli import _stage_settings

    stages = _stage_settings("quick", ["stage_two.kinds=cocktail", "stage_two.finetune_kinds=duet,grid2x2",
                                       "stage_two.finetune_from=2"], None)
    assert stages["stage_two"].kinds == ("cocktail",) and stages["stage_two"].finetune_kinds == ("duet", "grid2x2")


def test_synth_refuses_a_negative_seed(tmp_path, capsys):
    assert main(["synth", "--preset", "sample", "--out", str(tmp_path / "s"), "--seed", "-1"]) == 2
    assert "seed=-1: must be a whole number >= 0" in _error(capsys) and not (tmp_path / "s").exists()


# ---- C9, C9b, C9c: devices -----------------------------------------------------------------------

def test_a_device_that_is_not_there_is_refused_before_anything_runs(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["run", "--device", "cuda", "--no-progress"]) == 2
    assert "--device cuda: PyTorch finds no CUDA GPU here" in _error(capsys)
    assert main(["run", "--device", "gpu", "--no-progress"]) == 2
    assert "--device gpu: not a device name" in _error(capsys)
    assert list(tmp_path.iterdir()) == []  # no world was generated


def test_a_gpu_makes_the_default_run_quick(tmp_path, monkeypatch):
    import dsol_lite.pipeline

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    seen = {}

    def fake_pipeline(name, world, runs, run_name, device, **kwargs):
        seen.update(preset=name, device=device.type, epochs=kwargs["stage_one"].epochs)
        raise ConfigError("stop here")

    monkeypatch.setattr(dsol_lite.pipeline, "run_pipeline", fake_pipeline)
    monkeypatch.setattr("dsol_lite.distributed.distributed_run", _no_distribution)
    assert main(["run", "--device", "cuda", "--runs", str(tmp_path)]) == 2
    assert seen == {"preset": "quick", "device": "cuda", "epochs": 16}


class _no_distribution:
    def __init__(self, device):
        from dsol_lite.distributed import Ranks
        self.value = (Ranks(), device)

    def __enter__(self):
        return self.value

    def __exit__(self, *exc):
        return False


# ---- F3a, F3b, F4: faults of the run folder -------------------------------------------------------

def test_a_read_only_run_folder_is_named(tiny_world, tmp_path, capsys, monkeypatch):
    real_mkdir = Path.mkdir

    def read_only(self, *args, **kwargs):
        if str(self).startswith(str(tmp_path / "ro")):
            raise OSError(errno.EROFS, "Read-only file system", str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", read_only)
    code = main(["run", "--world", str(tiny_world), "--runs", str(tmp_path / "ro" / "runs"), *TINY_RUN])
    assert code == 2 and f"{tmp_path / 'ro' / 'runs'}: Read-only file system" in _error(capsys)


def test_a_full_disk_while_saving_a_checkpoint(tmp_path, monkeypatch):
    def full(payload, path):
        Path(path).write_bytes(b"half a checkpoint")
        raise RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 1234 vs 1200")

    (tmp_path / "last.pt").write_bytes(b"the previous checkpoint")
    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(StorageError,
                       match=r"last.pt: cannot write this checkpoint \(.*unexpected pos.*previous one is kept"):
        atomic_torch_save({"model": {}}, tmp_path / "last.pt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]  # no .part left
    assert (tmp_path / "last.pt").read_bytes() == b"the previous checkpoint"


def test_a_log_line_cut_by_a_kill_is_skipped_then_dropped(tmp_path):
    log = MetricsLog(tmp_path / "metrics.jsonl")
    log.write(epoch=0, phase="train", loss=1.0)
    with (tmp_path / "metrics.jsonl").open("a") as f:
        f.write('{"epoch": 1, "pha')
    with pytest.warns(UserWarning, match="metrics.jsonl: skipped its last line"):
        assert log.read() == [{"epoch": 0, "loss": 1.0, "phase": "train"}]
    with pytest.warns(UserWarning, match="dropped its last line"):
        MetricsLog(tmp_path / "metrics.jsonl").write(epoch=1, phase="validate")
    assert [r["epoch"] for r in log.read()] == [0, 1]
    (tmp_path / "metrics.jsonl").write_text('{"epoch": 0}\nnot json\n{"epoch": 1}\n')
    with pytest.raises(DataError, match="metrics.jsonl: line 2 is not valid JSON"):
        log.read()


def test_a_finished_run_with_a_cut_log_line_evaluates_again(tiny_world, tiny_stage_one, tmp_path, capsys):
    run = tmp_path / "runs" / "tiny"
    shutil.copytree(tiny_stage_one, run / "stage_one")
    args = ["run", "--world", str(tiny_world), "--runs", str(tmp_path / "runs"), "--name", "tiny", *TINY_RUN]
    assert main(args) == 0
    with (run / "stage_two" / "metrics.jsonl").open("a") as f:
        f.write('{"epoch": 1, "pha')
    with pytest.warns(UserWarning, match="metrics.jsonl: (dropped|skipped) its last line"):
        assert main(args) == 0
    assert "done in" in capsys.readouterr().out


def test_run_settings_survive_dataclass_replace():
    from dsol_lite.stage_two import STAGE_TWO_PRESETS

    with pytest.raises(ConfigError, match="kinds='cocktail': give a tuple"):
        dataclasses.replace(STAGE_TWO_PRESETS["quick"], kinds="cocktail").validate()
