"""How early can a sweep choose? The choice after each epoch of a full-length sweep.

    dsol-lite compare --preset quick --sweep-epochs 8 --runs runs/full-sweep   # every configuration to the end
    python scripts/sweep_choice_by_epoch.py runs/full-sweep/compare-quick

Reads the validation log of every seed-0 sweep run in a ``dsol-lite compare`` folder
(``<method>/<label>-s0/metrics.jsonl``) and prints, per method, each configuration's validation
IoU@0.5 epoch by epoch, then which configuration the best validation *so far* picks after 1, 2, ...
epochs, beside the final choice. ``dsol_lite.tuning.SWEEP_FRACTION`` (3 of 8 epochs) was set
from this table.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dsol_lite.methods import PEER_PRESETS  # noqa: E402
from dsol_lite.training import MetricsLog  # noqa: E402
from dsol_lite.tuning import sweep_grid  # noqa: E402


def validation_by_epoch(folder: Path) -> list[float]:
    """A run's validation IoU@0.5, one per epoch (the last record of an epoch that was validated twice)."""
    by_epoch = {r["epoch"]: r["val_iou@0.5"] for r in MetricsLog(folder / "metrics.jsonl").read()
                if r.get("phase") == "validate"}
    return [by_epoch[e] for e in sorted(by_epoch)]


def choices(curves: dict[str, list[float]]) -> list[str]:
    """The configuration with the best validation so far after each epoch (ties: the first listed)."""
    epochs = min(len(v) for v in curves.values())
    return [max(curves, key=lambda label: max(curves[label][:k])) for k in range(1, epochs + 1)]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="a dsol-lite compare folder, e.g. runs/compare-quick")
    parser.add_argument("--preset", default="quick", help="the compare preset the folder was made with")
    args = parser.parse_args()
    for method in ("dsol", "ezvsl", "fnac", "alignment", "avgn"):
        labels = list(sweep_grid(method, PEER_PRESETS[args.preset]))
        folders = {label: args.folder / method / f"{label}-s0" for label in labels}
        if not all((f / "metrics.jsonl").exists() for f in folders.values()):
            print(f"{method}: no complete sweep in {args.folder / method}")
            continue
        curves = {label: validation_by_epoch(f) for label, f in folders.items()}
        print(method)
        for label, values in curves.items():
            print(f"  {label:24s}", " ".join(f"{v:.3f}" for v in values))
        picks = choices(curves)
        final = picks[-1]
        for k, pick in enumerate(picks, 1):
            same = ("same as the last" if pick == final
                    else f"{max(curves[pick]):.3f} at best vs {max(curves[final]):.3f}")
            print(f"    after {k} epoch{'s' if k > 1 else ' '}: {pick:24s} ({same})")
