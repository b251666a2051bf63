"""What DSOL's published stage-one settings do on the synthetic world, scaled to a CPU: the stored result
that notebook 02 (after section 2's training) plots next to its own run.

    python scripts/paper_preset_lesson.py                  # writes notebooks/results/paper_preset_quick_world.json

The `paper` preset (lr 1e-4, one negative per audio, the backbones trained on the pseudo-labels in every
round, three passes), at the quick preset's size (width 16, 128-px crops, no ImageNet weights: nothing is
downloaded) on the quick world, for six epochs. Recorded per epoch: validation IoU@0.5 and AUC (DSOL's
protocol) and, from the second epoch on, the NMI of that epoch's clustering round.
"""

from __future__ import annotations

import dataclasses
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

from dsol_lite import __version__
from dsol_lite.pipeline import ensure_world
from dsol_lite.stage_one import STAGE_ONE_PRESETS, StageOneTrainer

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "notebooks" / "results" / "paper_preset_quick_world.json"


def main() -> None:
    world = ensure_world(ROOT / "worlds" / "quick", "quick", progress=False)
    cfg = dataclasses.replace(STAGE_ONE_PRESETS["paper"], width=16, image_size=128, epochs=6, imagenet=False,
                              checkpoint_every=25)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as run:
        trainer = StageOneTrainer(world, run, cfg, torch.device("cpu"), progress_bar=False)
        trainer.fit()
        log = trainer.log.read()
    seconds = time.perf_counter() - start
    epochs = [{"epoch": r["epoch"], "val_iou@0.5": r["val_iou@0.5"], "val_auc": r["val_auc"]}
              for r in log if r["phase"] == "validate"]
    rounds = {r["epoch"]: r["nmi"] for r in log if r["phase"] == "cluster"}
    for row in epochs:
        row["round_nmi"] = rounds.get(row["epoch"])
    result = {"command": "python scripts/paper_preset_lesson.py", "dsol_lite": __version__,
              "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads",
              "seconds": round(seconds), "settings": dataclasses.asdict(cfg), "world": str(world.relative_to(ROOT)),
              "epochs": epochs}
    OUT.write_text(json.dumps(result, indent=1) + "\n")
    for row in epochs:
        print(row)
    print(f"{seconds:.0f} s; written to {OUT.relative_to(ROOT)}", file=sys.stderr)


if __name__ == "__main__":
    main()
