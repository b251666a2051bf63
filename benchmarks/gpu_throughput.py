"""Is training limited by the model or by everything around it? Clips/s of the model alone and of the
whole trainer, side by side in one run, for stage one and stage two, on any device.

    python benchmarks/gpu_throughput.py --world worlds/quick --preset quick        # the quick world must exist
    python benchmarks/gpu_throughput.py --world worlds/full --preset full --device cuda

For each stage, at the preset's batch size and image size:

* **model only**: the trainer's own step (``StageOneTrainer.localize_step``,
  ``StageTwoTrainer.train_step``: forward, loss, backward, optimizer) on one batch that is
  already on the device, repeated: what the model alone allows;
* **whole trainer**: one training epoch of the trainer's loop, as ``fit`` runs it (making every
  batch from the clip store, logging, checkpoints), timed on the wall clock;
* their ratio (whole / model only, 1.0 = the model is all that limits training), and on CUDA the
  GPU's busy fraction during the epoch (``nvidia-smi`` sampled every 0.1 s, where present).

With ``--fit-epochs N`` stage one's whole ``fit`` (N epochs: training, validation, selection and
the clustering round) runs last, with the busy fraction over all of it.

The stores and models are made first and not timed; on CUDA both timings wait for the device.
The full preset is timed from scratch (no ImageNet weights: no download). Stage two starts from a
stage-one model with a random dictionary: the speed of a step does not depend on what it learned.
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from dsol_lite.config import parse_device
from dsol_lite.data.store import ClipStore
from dsol_lite.pipeline import PIPELINE_PRESETS
from dsol_lite.stage_one import StageOneTrainer
from dsol_lite.stage_two import StageTwoTrainer
from dsol_lite.training import batch_order, to_device


class BusySampler:
    """The GPU's utilisation (%) from ``nvidia-smi``, sampled in a thread while the block runs."""

    def __init__(self, device: torch.device) -> None:
        self.samples: list[float] = []
        self.enabled = device.type == "cuda" and shutil.which("nvidia-smi") is not None
        self.index = device.index or 0
        self._stop = threading.Event()

    def _run(self) -> None:
        while not self._stop.is_set():
            done = subprocess.run(["nvidia-smi", f"--id={self.index}", "--query-gpu=utilization.gpu",
                                   "--format=csv,noheader,nounits"], capture_output=True, text=True)
            if done.returncode == 0 and done.stdout.strip():
                self.samples.append(float(done.stdout.split()[0]))
            self._stop.wait(0.1)

    def __enter__(self) -> "BusySampler":
        if self.enabled:
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.enabled:
            self._stop.set()
            self._thread.join()

    def summary(self) -> str:
        if not self.samples:
            return "GPU busy: n/a (no nvidia-smi)" if self.enabled else "GPU busy: n/a (not a CUDA device)"
        return f"GPU busy {statistics.mean(self.samples):.0f} % (mean of {len(self.samples)} nvidia-smi samples)"


def wait(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def clips_per_second(fn, clips: int, device: torch.device, repeats: int) -> float:
    fn()  # warm-up (kernels chosen, memory allocated)
    wait(device)
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    wait(device)
    return clips * repeats / (time.perf_counter() - start)


def report(stage: str, batch: int, model: float, whole: float, steps: int, busy: BusySampler) -> None:
    print(f"{stage}: batch {batch}")
    print(f"  model only     {model:9.0f} clips/s")
    print(f"  whole trainer  {whole:9.0f} clips/s ({steps} steps, one epoch of the training loop)")
    print(f"  whole / model  {whole / model:9.2f}   {busy.summary()}")


def time_stage(name: str, trainer, step, epoch, device: torch.device, repeats: int) -> None:
    """The trainer's ``step`` on one batch already on the device, repeated, against one ``epoch`` of its
    training loop (batches from the clip store, logging, checkpoints)."""
    cfg = trainer.cfg
    batch = to_device(trainer.train_set.batch(list(range(cfg.batch_size))), device)
    trainer.model.train()
    model = clips_per_second(lambda: step(batch), cfg.batch_size, device, repeats)
    steps = len(batch_order(len(trainer.train_set), cfg.batch_size, cfg.seed, 0, 0))
    with BusySampler(device) as busy:
        wait(device)
        start = time.perf_counter()
        epoch()
        trainer._flush()
        wait(device)
        seconds = time.perf_counter() - start
    report(name, cfg.batch_size, model, steps * cfg.batch_size / seconds, steps, busy)


def fake_stage_one_result(trainer: StageOneTrainer) -> None:
    """best.pt and dictionary.pt of an untrained model with a random dictionary (for timing only)."""
    channels = trainer.model.backbones.visual_net.out_channels
    trainer.round = trainer.best_epoch = 0
    trainer.dictionary = F.normalize(torch.randn(trainer.k, channels), dim=1)
    trainer.pseudo_labels = torch.arange(len(trainer.train_set)) % trainer.k
    trainer._save("best")
    trainer._write_round("dictionary.pt")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--world", required=True, help="the preset's world (dsol-lite synth --preset ...)")
    parser.add_argument("--preset", default="quick", choices=("quick", "full"))
    parser.add_argument("--device", help="cpu, cuda, mps (default: the best available)")
    parser.add_argument("--repeats", type=int, default=20, help="model-only steps timed")
    parser.add_argument("--fit-epochs", type=int, default=0, help="then time stage one's fit for this many epochs")
    parser.add_argument("--batch", type=int, help="batch size of both stages (default: the preset's)")
    args = parser.parse_args()
    device = parse_device(args.device)
    preset = PIPELINE_PRESETS[args.preset]
    s1 = dataclasses.replace(preset.stage_one, imagenet=False)  # checkpoints as often as in a run
    s2 = preset.stage_two
    if args.batch:
        s1, s2 = dataclasses.replace(s1, batch_size=args.batch), dataclasses.replace(s2, batch_size=args.batch)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{torch.get_num_threads()} CPU threads"
    print(f"{args.preset} preset on {device} ({name}), world {args.world}, torch {torch.__version__}")
    start = time.perf_counter()
    store = ClipStore.open(args.world, None, s1.image_size, device)
    with tempfile.TemporaryDirectory() as run:
        one = StageOneTrainer(store, Path(run) / "stage_one", s1, device, progress_bar=False)
        print(f"stores and models ready in {time.perf_counter() - start:.1f} s (decoding included, not timed below)")
        time_stage("stage one (localize)", one, one.localize_step, one._localize, device, args.repeats)
        fake_stage_one_result(one)
        two = StageTwoTrainer(store, Path(run) / "stage_two", Path(run) / "stage_one", s2, device, progress_bar=False)
        time_stage("stage two", two, two.train_step, two._train_epoch, device, args.repeats)
        if args.fit_epochs:
            fit(store, Path(run) / "fit", dataclasses.replace(s1, epochs=args.fit_epochs), device)


def fit(store: ClipStore, run: Path, cfg, device: torch.device) -> None:
    """Stage one's fit as a run does it (every phase), timed, with the GPU's busy fraction."""
    trainer = StageOneTrainer(store, run, cfg, device, progress_bar=False)
    with BusySampler(device) as busy:
        start = time.perf_counter()
        result = trainer.fit()
        wait(device)
        seconds = time.perf_counter() - start
    print(f"stage one fit, {cfg.epochs} epoch(s) ({result['steps']} steps, validation and the clustering round "
          f"included): {seconds:.1f} s; {busy.summary()}")


if __name__ == "__main__":
    main()
