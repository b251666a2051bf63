"""AVGN-style pixel AP over a test set: one torch sort per map vs scikit-learn per map, in one run.

    python benchmarks/pixel_ap.py                  # 100 cocktail-like scenes, 8 classes, 160 px
    python benchmarks/pixel_ap.py --scenes 300 --size 224

The maps are what the evaluation scores: coarse class maps (10 x 10 for 160 px) upsampled
bilinearly, so almost every pixel has its own score, against box masks of one to three sounding
classes per scene. Every map of a scene is scored against every source (as PIAP needs). Both
ways are timed in alternation (the median of ``--rounds`` is printed), with the largest difference.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from sklearn.metrics import average_precision_score

from dsol_lite.metrics import pixel_aps, upsample


def scored_maps(scenes: int, classes: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows, size, size) maps and masks: every class map of each scene against each sounding box."""
    g = torch.Generator().manual_seed(0)
    coarse = torch.rand(scenes, classes, size // 16, size // 16, generator=g)
    maps = upsample(coarse.flatten(0, 1), size).view(scenes, classes, size, size)
    rows_maps, rows_masks = [], []
    for i in range(scenes):
        for _ in range(1 + i % 3):  # one to three sources
            x1, y1 = torch.randint(0, size // 2, (2,), generator=g).tolist()
            mask = torch.zeros(size, size, dtype=torch.bool)
            mask[y1:y1 + size // 3, x1:x1 + size // 3] = True
            rows_maps.append(maps[i])
            rows_masks.append(mask.expand(classes, size, size))
    return torch.cat(rows_maps), torch.cat(rows_masks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenes", type=int, default=100)
    parser.add_argument("--classes", type=int, default=8)
    parser.add_argument("--size", type=int, default=160)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    maps, masks = scored_maps(args.scenes, args.classes, args.size)
    y, s = masks.flatten(1).numpy(), maps.flatten(1).double().numpy()
    times: dict[str, list[float]] = {"scikit-learn, one map at a time": [], "dsol_lite pixel_aps (torch)": []}
    for _ in range(args.rounds):
        start = time.perf_counter()
        reference = [average_precision_score(y[r], s[r]) for r in range(len(y))]
        times["scikit-learn, one map at a time"].append(time.perf_counter() - start)
        start = time.perf_counter()
        ours = pixel_aps(maps, masks)
        times["dsol_lite pixel_aps (torch)"].append(time.perf_counter() - start)
    print(f"{len(maps)} maps of {args.size} x {args.size} px, {torch.get_num_threads()} threads")
    for name, t in times.items():
        print(f"  {name:34s} {statistics.median(t):7.2f} s")
    ratio = statistics.median(times["scikit-learn, one map at a time"]) / statistics.median(
        times["dsol_lite pixel_aps (torch)"])
    largest = max(abs(a - b) for a, b in zip(reference, ours.tolist()))
    print(f"  speed-up {ratio:.1f}x; largest difference {largest:.1e}")


if __name__ == "__main__":
    main()
