"""What slows FNAC down from scratch: its visual dropout or its false-negative terms?

    python scripts/fnac_brakes.py                      # after dsol-lite compare --preset quick
    python scripts/fnac_brakes.py --seeds 0 1 --out notebooks/results/fnac_brakes_quick.json

Starts from FNAC's configuration chosen by ``dsol-lite compare`` (its ``comparison.json``) and
trains it again with one change at a time, each into its own folder beside the comparison's runs:

* ``dropout0``: no dropout on the projected visual map (FNAC's paper drops 90 % of its channels);
* ``terms0``: the three false-negative L1 terms switched off (FNAC's loss is then EZ-VSL's, with
  the dropout kept).

Each run is scored on the test solo scenes with DSOL's IoU@0.5 (``comparison.evaluate_method``),
next to the comparison's own FNAC and EZ-VSL rows for the same seeds.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from dsol_lite.comparison import evaluate_method  # noqa: E402
from dsol_lite.folders import write_text  # noqa: E402
from dsol_lite.methods import PeerConfig, PeerTrainer  # noqa: E402
from dsol_lite.training import config_from_settings  # noqa: E402
from dsol_lite.tuning import run_folder  # noqa: E402

CHANGES = {"dropout0": {"fnac_dropout": 0.0}, "terms0": {"fnac_weights": (0.0, 0.0, 0.0)}}


def chosen_config(record: dict, method: str) -> tuple[str, PeerConfig]:
    """The configuration ``dsol-lite compare`` chose for ``method``, as a PeerConfig."""
    settings = record["chosen"][method]
    return settings["label"], config_from_settings(PeerConfig, settings)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default=str(ROOT / "runs" / "compare-quick"), help="the comparison's folder")
    parser.add_argument("--world", default=str(ROOT / "worlds" / "quick"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--out", help="write the scores as JSON here")
    args = parser.parse_args()
    record = json.loads((Path(args.runs) / "comparison.json").read_text())
    label, base = chosen_config(record, "fnac")
    device = torch.device("cpu")
    rows = [{k: r[k] for k in ("method", "seed", "config", "best_val_iou@0.5", "dsol_iou@0.5")}
            for r in record["rows"] if r["method"] in ("fnac", "ezvsl") and r["seed"] in args.seeds]
    start = time.perf_counter()
    for change, fields in CHANGES.items():
        for seed in args.seeds:
            cfg = dataclasses.replace(base, seed=seed, **fields)
            trainer = PeerTrainer(args.world, run_folder(args.runs, "fnac", f"{label}+{change}", seed), cfg, device)
            trainer.fit()
            row = evaluate_method("fnac", trainer.load_best(), args.world, cfg.image_size, device)
            rows.append({"method": "fnac", "seed": seed, "config": f"{label}+{change}",
                         "best_val_iou@0.5": float(trainer.best), "dsol_iou@0.5": row["dsol_iou@0.5"]})
            print(json.dumps(rows[-1]), flush=True)
    seconds = round(time.perf_counter() - start)
    print(f"{seconds} s")
    if args.out:
        command = "python scripts/fnac_brakes.py --seeds " + " ".join(map(str, args.seeds))
        write_text(args.out, json.dumps({"command": command, "seconds": seconds, "rows": rows}, indent=1) + "\n")
