"""Training step time of every method, as a ratio to DSOL's stage one, side by side in one run.

    python benchmarks/method_steps.py                    # quick size (width 16, 128 px, batch 32)
    python benchmarks/method_steps.py --width 64 --size 224 --batch 32 --steps 3

Every method gets the same batch (random images and waveforms of the world's shapes), the same
backbone pair and Adam; each step is the method's own loss (``methods.METHODS``), backward and
an optimizer step. The methods are timed in rotation (one step of each, repeated), so a busy
machine slows them alike; the median step is reported.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time

import torch

from dsol_lite.data.audio import AudioConfig, LogMel
from dsol_lite.methods import METHODS, PEER_PRESETS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--classes", type=int, default=8)
    args = parser.parse_args()
    torch.manual_seed(0)
    log_mel = LogMel(AudioConfig())
    batch = {"image": torch.randn(args.batch, 3, args.size, args.size),
             "audio": torch.randn(args.batch, AudioConfig().sample_rate) * 0.1,
             "label": torch.arange(args.batch) % args.classes}
    runs = {}
    for name, method in METHODS.items():
        cfg = dataclasses.replace(PEER_PRESETS["quick"], method=name, width=args.width, image_size=args.size,
                                  fnac_warmup_epochs=0)
        model = method.build(cfg, args.classes).train()
        runs[name] = (method, cfg, model, torch.optim.Adam(model.parameters(), lr=1e-4))
    times: dict[str, list[float]] = {name: [] for name in runs}
    for step in range(args.steps + 1):  # step 0 warms up
        for name, (method, cfg, model, opt) in runs.items():
            start = time.perf_counter()
            loss, _ = method.loss(model, batch, log_mel, cfg, 1)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if step:
                times[name].append(time.perf_counter() - start)
    base = statistics.median(times["dsol"])
    print(f"width {args.width}, {args.size} px, batch {args.batch}, {torch.get_num_threads()} threads, "
          f"median of {args.steps} steps")
    print(f"{'method':<12}{'s/step':>10}{'x DSOL stage one':>20}")
    for name, t in times.items():
        print(f"{name:<12}{statistics.median(t):>10.3f}{statistics.median(t) / base:>20.2f}")


if __name__ == "__main__":
    main()
