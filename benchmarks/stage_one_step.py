"""Stage-one training step: dsol_lite vs the original DSOL formulation, side by side.

    python benchmarks/stage_one_step.py                      # quick model (width 16, 128 px)
    python benchmarks/stage_one_step.py --width 64 --size 224 --batch 32 --steps 3   # DSOL's size

The original code builds a doubled batch for every step: each audio twice, once with its own
frame and once with a frame loaded from another clip, and runs both streams on all 2B pairs.
dsol_lite runs each stream once on the B clips and forms the negatives by re-pairing the
embeddings. Both steps below use the same model, the same B clips (the original also gets B
extra negative frames) and the same optimizer; the printed ratio is original / dsol_lite
time per step, measured alternately in one run (the re-pairing is meant to be >= 1.8x faster).

Two more steps time the quick preset's choices: every other frame of the batch as a negative
(``negatives="all"``), and that with the frames tiled 2 x 2 into pictures for the visual stream
(``mosaic=True``). A mosaic sends the same pixels through the same convolutions, so it should
cost what the step without it costs; the last line prints that ratio.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from dsol_lite.models import BackbonePair, DSOLStageOne
from dsol_lite.objectives import stage_one_loss


def original_step(model: DSOLStageOne, opt, images, negative_images, spec) -> float:
    """DSOL's batch_organize: audio i twice, with its frame (label 1) and another clip's (0)."""
    b = images.shape[0]
    doubled_images = torch.stack([images, negative_images], 1).flatten(0, 1)
    doubled_spec = spec.repeat_interleave(2, 0)
    labels = torch.tensor([1.0, 0.0]).repeat(b)
    out = model.encode(doubled_images, doubled_spec)
    logits = model.logit_maps(out.v_emb, out.a_emb).amax(dim=(1, 2))
    loss = F.binary_cross_entropy_with_logits(logits, labels)
    opt.zero_grad()
    loss.backward()
    opt.step()
    return loss.item()


def lite_step(model: DSOLStageOne, opt, images, spec, mosaic: bool = False, negatives: str = "one") -> float:
    loss, _ = stage_one_loss(model, model.encode(images, spec, mosaic), negatives=negatives)
    opt.zero_grad()
    loss.backward()
    opt.step()
    return loss.item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    torch.manual_seed(0)
    model = DSOLStageOne(BackbonePair(args.width), num_clusters=8)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    images = torch.randn(args.batch, 3, args.size, args.size)
    negatives = torch.randn(args.batch, 3, args.size, args.size)
    spec = torch.randn(args.batch, 1, 201, 64)
    times = {"original": [], "dsol_lite": [], "all": [], "all + mosaic": []}
    for step in range(args.steps + 1):  # the first round warms up and is not counted
        for name in times:
            start = time.perf_counter()
            if name == "original":
                original_step(model, opt, images, negatives, spec)
            else:
                lite_step(model, opt, images, spec, mosaic=name == "all + mosaic",
                          negatives="one" if name == "dsol_lite" else "all")
            if step:
                times[name].append(time.perf_counter() - start)
    print(f"stage-one step, width {args.width}, {args.size} px, batch {args.batch}, "
          f"{torch.get_num_threads()} threads, median of {args.steps}")
    for name, t in times.items():
        step = statistics.median(t)
        print(f"  {name:<12} {step * 1000:8.1f} ms/step  {args.batch / step:7.1f} clips/s")
    ratio = statistics.median(times["original"]) / statistics.median(times["dsol_lite"])
    print(f"  speed-up dsol_lite vs original: {ratio:.2f}x")
    cost = statistics.median(times["all + mosaic"]) / statistics.median(times["all"])
    print(f"  cost of the mosaic (all + mosaic vs all): {cost:.2f}x")


if __name__ == "__main__":
    main()
