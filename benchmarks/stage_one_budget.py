"""Where a quick stage-one step's time goes on the machine it runs on, and the stage-one time it predicts.

    python benchmarks/stage_one_budget.py --data worlds/quick   # with the loader (the world must exist)
    python benchmarks/stage_one_budget.py                       # compute only

For a lecturer before class: will notebook 02's training cell fit in its 6 minutes here? The
parts of one training step of the quick preset (visual stream, audio stream, the whole step
with the loss and Adam, and with ``--data`` making a batch from the clip store: indexing it, the
crop, flip and jitter, the audio windows) are timed alternately in one run and printed with their
share of the step. With ``--data`` the trainer itself then runs one epoch, one validation and one
round's feature extraction, after decoding the clips as a fresh kernel does, and the prediction
scales that to the preset's epochs.

Read the prediction as a lower bound. On the reference machine (2 AMD EPYC cores) it said 264 s,
and notebook 02's way of running stage one (interrupted, resumed, 13 steps redone) took 301 s
right after: its steps ran at 250-300 ms against the 241 ms of the benchmark's epoch, and in an
earlier run they drifted from 226 to 300 ms within the run. The machine's speed, not the
code, moves between runs.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from contextlib import suppress

import torch

from dsol_lite.data.audio import AudioConfig, LogMel
from dsol_lite.data.store import ClipStore
from dsol_lite.objectives import stage_one_loss
from dsol_lite.stage_one import STAGE_ONE_PRESETS, Interrupted, StageOneTrainer, build_stage_one


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", help="a dataset in the shared layout (times the loader too)")
    parser.add_argument("--repeats", type=int, default=8)
    args = parser.parse_args()
    cfg = STAGE_ONE_PRESETS["quick"]
    torch.manual_seed(0)
    model = build_stage_one(cfg, num_clusters=8).train()
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    b, size, eval_size = cfg.batch_size, cfg.image_size, cfg.evaluation_size
    audio = LogMel(AudioConfig())(torch.randn(b, AudioConfig().window_samples))
    images, eval_images = torch.randn(b, 3, size, size), torch.randn(b, 3, eval_size, eval_size)

    def step() -> None:
        loss, _ = stage_one_loss(model, model.encode(images, audio), negatives=cfg.negatives)
        opt.zero_grad()
        loss.backward()
        opt.step()

    @torch.no_grad()
    def evaluate() -> None:
        model.eval()
        model.encode(eval_images, audio)
        model.train()

    parts: dict[str, Callable[[], object]] = {
        "visual stream, forward + backward": lambda: model.backbones.visual(images).mean().backward(),
        "audio stream, forward + backward": lambda: model.backbones.audio(audio).mean().backward(),
        "whole step (both streams, loss, Adam)": step,
        f"evaluation forward at {eval_size} px": evaluate,
    }
    if args.data:
        from dsol_lite.data.datasets import SoloPairs
        from dsol_lite.training import batch_order, iterate

        train = SoloPairs(args.data, "train", image_size=size, train=True, masks=False)  # decodes the split once
        batches = batch_order(len(train), b, 0, 0, 0)
        parts["making a batch (store, crop, jitter, audio)"] = lambda: next(iterate(train, batches[:1], 0))
    times: dict[str, list[float]] = {name: [] for name in parts}
    for fn in parts.values():  # warm-up
        fn()
    for _ in range(args.repeats):  # alternate, so a change in the machine's speed hits every part alike
        for name, fn in parts.items():
            times[name].append(timed(fn))
    ms = {name: 1000 * statistics.median(t) for name, t in times.items()}
    step_ms = ms["whole step (both streams, loss, Adam)"] + ms.get("making a batch (store, crop, jitter, audio)", 0.0)
    print(f"quick stage-one step: width {cfg.width}, {size} px, batch {b}, {torch.get_num_threads()} threads, "
          f"median of {args.repeats}")
    for name, value in ms.items():
        share = f"{value / step_ms:6.1%} of a step" if "evaluation" not in name else ""
        print(f"  {name:<40s} {value:7.1f} ms  {share}")
    if args.data:
        predict(args.data, cfg)
    else:
        print("add --data worlds/quick (a generated world) to time the loader and predict stage one's time")


def predict(data: str, cfg) -> None:
    """Time the trainer itself (set-up, decoding, one epoch's localize and validate, one round's
    feature extraction) and scale to the preset's epochs: the real loop, with its log-mel, logging,
    checkpoints and fresh batches, runs slower than the parts above add up to."""
    ClipStore.release_all()  # decode every clip, as a fresh notebook kernel does
    with tempfile.TemporaryDirectory() as run:
        start = time.perf_counter()
        trainer = StageOneTrainer(data, run, cfg, device=torch.device("cpu"), progress_bar=False)
        build = time.perf_counter() - start  # the store decodes the train and val splits here
        per_epoch = len(trainer.train_set) // cfg.batch_size
        localize = timed(lambda: _one_epoch(trainer, per_epoch))
        validate = timed(trainer._validate)
        extract = timed(trainer.extract)
    total = build + cfg.epochs * (localize + validate) + extract
    print(f"setting up, with decoding the clips once: {build:.1f} s")
    print(f"one epoch: localize {localize:.1f} s ({per_epoch} steps, {1000 * localize / per_epoch:.0f} ms each), "
          f"validate {validate:.1f} s; one round's feature extraction {extract:.1f} s")
    print(f"predicted stage one + dictionary, {cfg.epochs} epochs: {total:.0f} s (a lower bound)")
    print(f"predicted / the 6-minute target: {total / 360:.2f}")


def _one_epoch(trainer: StageOneTrainer, steps: int) -> None:
    with suppress(Interrupted):  # the run stops itself after the epoch's last step
        trainer.fit(interrupt_after=steps)


if __name__ == "__main__":
    main()
