"""Where an epoch of ``dsol-lite compare`` goes: the model, the batches, validation, checkpoints.

    python benchmarks/peer_epoch_parts.py                          # the quick world, every method
    python benchmarks/peer_epoch_parts.py --methods dsol alignment --epochs 2
    python benchmarks/peer_epoch_parts.py --width 64 --size 224              # DSOL's size

Each method trains ``--epochs`` epochs (default 1) of the configuration its quick sweep chose, as
read from ``notebooks/results/comparison_quick.json`` (there: the mosaic, tau 0.2 or DSOL's scale
at 10x; alignment at tau 0.07), with FNAC's terms on from the first epoch (``fnac_warmup_epochs=0``,
so that its row is FNAC's whole loss), with ``PeerTrainer``, into a temporary folder, while a
stopwatch times its parts: making the batches from the clip store; the loss (log-mel features and
the forward pass, with anything the method does to its inputs: for alignment, its second, strongly
augmented view of the images, also shown on its own); the backward pass with the optimizer step;
validation (with the ``best`` checkpoint it writes, as every first epoch does); the other
checkpoint writes. It prints each part's share of the epoch, side by side for the methods, so the
ratios are measured on the same machine in one run.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import json
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from dsol_lite import methods, training
from dsol_lite.data.datasets import SoloPairs
from dsol_lite.methods import PEER_PRESETS, PeerConfig, PeerTrainer
from dsol_lite.tuning import sweep_grid

COMPARISON = Path(__file__).resolve().parents[1] / "notebooks" / "results" / "comparison_quick.json"
CHOSEN = {method: chosen["label"] for method, chosen in json.loads(COMPARISON.read_text())["chosen"].items()}
PARTS = ("batches", "loss (forward)", "backward + optimizer", "validation", "checkpoint writes")
SECOND_VIEW = "of the loss: 2nd view"  # alignment's strongly augmented images, made one image at a time
_MISSING = object()


class Stopwatch:
    """Seconds spent in named functions (module functions or instance methods), by wrapping them for
    the length of a ``with`` block. A timed call inside another timed call counts once, as the outer."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self._depth = 0

    def timed(self, part: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            outer = self._depth == 0
            self._depth += 1
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self._depth -= 1
                if outer:
                    self.seconds[part] += time.perf_counter() - start
        return wrapper

    @contextlib.contextmanager
    def watching(self, targets: list[tuple[object, str, str]]) -> Iterator["Stopwatch"]:
        """Time ``getattr(owner, name)`` as ``part`` for every ``(owner, name, part)``, then put back
        what was there (an inherited method: nothing of the owner's own)."""
        saved = [(owner, name, vars(owner).get(name, _MISSING), getattr(owner, name)) for owner, name, _ in targets]
        try:
            for (owner, name, _, fn), (_, _, part) in zip(saved, targets):
                setattr(owner, name, self.timed(part, fn))
            yield self
        finally:
            for owner, name, own, _ in saved:
                if own is _MISSING:
                    if name in vars(owner):  # the wrapper set on the owner for an inherited method
                        delattr(owner, name)
                else:
                    setattr(owner, name, own)


def epoch_parts(world: Path, method: str, base: PeerConfig, device: torch.device) -> tuple[float, dict[str, float]]:
    """Seconds of ``base.epochs`` epochs of ``method``'s chosen configuration on ``base``, and of
    each part (``SECOND_VIEW`` is part of the loss)."""
    cfg = sweep_grid(method, base)[CHOSEN[method]]
    clock, inside_loss = Stopwatch(), Stopwatch()
    with tempfile.TemporaryDirectory() as run:
        trainer = PeerTrainer(world, Path(run) / method, cfg, device, progress_bar=False)
        loss = trainer.method.loss
        trainer.method = dataclasses.replace(trainer.method, loss=clock.timed("loss (forward)", loss))
        targets = [(SoloPairs, "batch", "batches"), (methods, "optimizer_step", "backward + optimizer"),
                   (PeerTrainer, "_validate", "validation"), (training.Checkpoints, "save", "checkpoint writes")]
        with clock.watching(targets), inside_loss.watching([(methods, "strong_views", SECOND_VIEW)]):
            start = time.perf_counter()
            trainer.fit()
            total = time.perf_counter() - start
    return total, dict(clock.seconds) | dict(inside_loss.seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--world", type=Path, default=Path("worlds/quick"))
    parser.add_argument("--methods", nargs="+", default=list(CHOSEN), choices=list(CHOSEN))
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args()
    device = torch.device("cpu")
    base = dataclasses.replace(PEER_PRESETS["quick"], epochs=args.epochs, width=args.width, image_size=args.size,
                               batch_size=args.batch, fnac_warmup_epochs=0)
    print(f"{args.epochs} epoch(s) of each method's chosen configuration (width {args.width}, {args.size} px, "
          f"batch {args.batch}) on {args.world}, {torch.get_num_threads()} CPU threads; share of the wall time, in %:")
    print(f"{'method':<11}{'seconds':>9}" + "".join(f"{p:>22}" for p in PARTS) + f"{'the rest':>10}"
          + f"{SECOND_VIEW:>24}")
    for method in args.methods:
        total, parts = epoch_parts(args.world, method, base, device)
        shares = [100 * parts.get(p, 0.0) / total for p in PARTS]
        second_view = 100 * parts.get(SECOND_VIEW, 0.0) / total
        print(f"{method:<11}{total:>9.1f}" + "".join(f"{s:>22.1f}" for s in shares) + f"{100 - sum(shares):>10.1f}"
              + f"{second_view:>24.1f}")


if __name__ == "__main__":
    main()
