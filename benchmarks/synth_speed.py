"""Synthetic-world generation speed: scenes/s per kind, and 1 vs N worker processes.

    python benchmarks/synth_speed.py                # quick preset, all cores
    python benchmarks/synth_speed.py --scale 0.25   # a quarter of the quick preset

Prints scenes/s for each scene kind (in-process rendering, no disk), then the whole preset
written to disk with 1 worker and with all workers, side by side in one run, as a ratio.
The target: the quick preset (>= 2,000 solo + 1,000 multi-source scenes) in < 2 minutes
on 2 cores.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import tempfile
import time
from pathlib import Path

from dsol_lite.synth.config import KINDS, preset
from dsol_lite.synth.scenes import make_scene
from dsol_lite.synth.writer import generate_world


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="quick")
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of the preset's scene counts")
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    args = parser.parse_args()
    base = preset(args.preset)
    cfg = dataclasses.replace(base, counts={k: tuple(max(1, int(c * args.scale)) for c in v)
                                            for k, v in base.counts.items()})
    print(f"preset {args.preset} x {args.scale}: {cfg.total_scenes()} scenes of {cfg.image_size} px, "
          f"{cfg.clip_seconds} s audio, {os.cpu_count()} cores")
    for kind in KINDS:
        n = 40
        start = time.perf_counter()
        for i in range(n):
            make_scene(cfg, kind, "train", i)
        print(f"  render {kind:<9} {n / (time.perf_counter() - start):7.1f} scenes/s (1 process, in memory)")
    rates = {}
    with tempfile.TemporaryDirectory() as tmp:
        for workers in sorted({1, args.workers}):
            out = Path(tmp) / f"w{workers}"
            start = time.perf_counter()
            generate_world(cfg, out, workers=workers, progress=False)
            seconds = time.perf_counter() - start
            rates[workers] = cfg.total_scenes() / seconds
            print(f"  write world, {workers} worker(s): {seconds:6.1f} s, {rates[workers]:6.1f} scenes/s")
            shutil.rmtree(out)
    if len(rates) == 2:
        print(f"  speed-up {args.workers} workers / 1 worker: {rates[args.workers] / rates[1]:.2f}x")


if __name__ == "__main__":
    main()
