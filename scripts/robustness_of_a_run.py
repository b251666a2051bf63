"""Score trained DSOL stage ones on the robustness test sets of their world (dsol_lite.robustness).

    python scripts/robustness_of_a_run.py                                   # runs/quick
    python scripts/robustness_of_a_run.py --run runs/quick --run runs/quick-noise-aug \\
        --out notebooks/results/robustness_dsol_quick.json

Each run folder holds a ``stage_one/`` (``dsol-lite run`` or ``dsol-lite stage-one``). The sets
are written once to ``worlds/<world>-robustness/<variant>`` (the test split's pictures and boxes,
its audio re-rendered); each run's best stage-one checkpoint is scored with DSOL's IoU@0.5 on
every set and with the silent-scene alarm. The clean set reproduces a run's own test score.
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

from dsol_lite.folders import write_text  # noqa: E402
from dsol_lite.robustness import evaluate_robustness, robustness_sets  # noqa: E402
from dsol_lite.stage_two import load_stage_one  # noqa: E402

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", action="append", help="a run folder with stage_one/ (repeat for several; "
                                                       "default: runs/quick)")
    parser.add_argument("--world", default=str(ROOT / "worlds" / "quick"), help="the world the runs trained on")
    parser.add_argument("--out", help="write the scores as JSON here")
    args = parser.parse_args()
    world = Path(args.world)
    sets = robustness_sets(world, world.parent / f"{world.name}-robustness", progress=True)
    rows = []
    for run in args.run or [str(ROOT / "runs" / "quick")]:
        start = time.perf_counter()
        cfg, model, _ = load_stage_one(Path(run) / "stage_one")
        row = evaluate_robustness(model.eval(), world, sets, cfg.evaluation_size, torch.device("cpu"))
        snr = "-" if cfg.noise_aug == 0 else "{:g}-{:g}".format(*cfg.noise_snr_db)  # dB, of the training noise
        settings = {"noise_aug": cfg.noise_aug, "noise_snr_db": snr, "offscreen_aug": cfg.offscreen_aug,
                    "seed": cfg.seed}
        rows.append({"run": Path(run).name} | settings | {k: round(v, 4) for k, v in row.items()})
        print(json.dumps(rows[-1]), f"({time.perf_counter() - start:.0f} s)", flush=True)
    if args.out:
        command = "python scripts/robustness_of_a_run.py " + " ".join(f"--run {r}" for r in args.run or [])
        write_text(args.out, json.dumps({"command": command.strip(), "rows": rows}, indent=1) + "\n")
