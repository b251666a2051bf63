"""Score a trained stage one on the robustness test sets of its world (dsol_lite.synth.variants).

    python scripts/robustness_of_a_run.py                       # runs/quick, the quick world
    python scripts/robustness_of_a_run.py --run runs/seed1 --preset quick

Each set is written once to worlds/<preset>-test-<variant> (the test split's pictures and boxes,
its audio re-rendered), then the run's best stage-one checkpoint is scored with DSOL's and
EZ-VSL's single-source protocols. The clean set reproduces the run's own test score exactly.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dsol_lite.data.audio import AudioConfig, LogMel  # noqa: E402
from dsol_lite.data.datasets import SoloPairs  # noqa: E402
from dsol_lite.evaluate import evaluate_single_source, localization_maps, mean_box_area  # noqa: E402
from dsol_lite.stage_two import load_stage_one  # noqa: E402
from dsol_lite.synth.config import preset  # noqa: E402
from dsol_lite.synth.variants import render_robustness_set  # noqa: E402

VARIANTS = ("clean", "noise20", "noise10", "noise0", "offscreen")

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default=str(ROOT / "runs" / "quick"), help="a run folder with stage_one/")
    parser.add_argument("--preset", default="quick", help="the world preset the run trained on")
    parser.add_argument("--out", help="write the scores as JSON here")
    args = parser.parse_args()
    cfg, model, _ = load_stage_one(Path(args.run) / "stage_one")
    model.eval()
    log_mel, rows = LogMel(AudioConfig()), {}
    for variant in VARIANTS:
        start = time.perf_counter()
        world = render_robustness_set(preset(args.preset), ROOT / "worlds" / f"{args.preset}-test-{variant}",
                                      variant, progress=False)
        test = SoloPairs(world, "test", image_size=cfg.evaluation_size)
        maps, gt = localization_maps(model, test, log_mel, torch.device("cpu"))
        table = evaluate_single_source(maps, gt, mean_box_area(test))
        rows[variant] = {k: round(table["model"][k], 3) for k in ("dsol_iou@0.5", "dsol_auc", "ezvsl_ciou@0.5")}
        print(f"{variant:10s} {rows[variant]}  ({time.perf_counter() - start:.0f} s)", flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1) + "\n")
