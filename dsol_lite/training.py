"""What every training stage shares: checkpoints, resumable batch order, logging, steps.

Notebook: 02_stage_one (resuming, checkpoints), used by every later stage.

* **Checkpoints** are written atomically (temporary file, then rename) and carry the
  fingerprint of the configuration that made them; loading one from another configuration,
  or a corrupt file, is a clear error. They hold model, optimizers, AMP scaler, RNG states and
  where the run was (epoch, phase, step), so training resumes where it stopped.
* **Batch order** is a permutation seeded by ``(seed, epoch, phase)``; resuming mid-epoch
  skips the batches already done without loading them. With datasets whose items are seeded
  per ``(seed, epoch, index)`` (``data.datasets``), a resumed run is bitwise identical to an
  uninterrupted one on CPU.
* **Steps** use mixed precision and ``channels_last`` on CUDA, plain float32 elsewhere. Their
  logged numbers stay on the device and are read every ``LOG_EVERY`` steps (no wait for the
  device per step); a non-finite loss stops training with a message naming the step, before
  anything is saved.
"""

from __future__ import annotations

import json
import math
import os
import random
import warnings
from contextlib import nullcontext, suppress
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, ContextManager, Iterator, TypeVar

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from dsol_lite.distributed import Ranks, broadcast_from_main, shard
from dsol_lite.errors import ConfigError, DataError, StorageError
from dsol_lite.folders import exclusive

T = TypeVar("T")
LOG_EVERY = 25  # training steps between reads of the logged numbers from the device

class TrainingError(RuntimeError):
    """Training cannot go on (e.g. the loss became NaN); the message says where and what is kept."""


@dataclass
class Progress:
    """Where a run is: the next batch to do is ``step`` of ``phase`` in ``epoch``."""

    epoch: int = 0
    phase: str = "localize"
    step: int = 0
    global_step: int = 0


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def batch_order(n: int, batch_size: int, seed: int, *keys: int, drop_last: bool = True) -> list[list[int]]:
    """A shuffled list of index batches, fixed by ``(seed, *keys)``."""
    if n < batch_size and drop_last:
        raise ConfigError(f"batch_size={batch_size} is larger than the dataset ({n} clips)")
    state = int(np.random.SeedSequence((seed, *keys)).generate_state(1)[0])
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(state)).tolist()
    stop = n - n % batch_size if drop_last else n
    return [perm[i:i + batch_size] for i in range(0, stop, batch_size)]


def sequential_batches(n: int, batch_size: int) -> list[list[int]]:
    return [list(range(i, min(i + batch_size, n))) for i in range(0, n, batch_size)]


def iterate(dataset: Dataset, batches: list[list[int]], start: int = 0) -> Iterator[dict]:
    """Collated batches ``batches[start:]`` of ``dataset``: made whole by a clip-store dataset
    (``data.datasets``, on its device), else collated item by item.

    A DataLoader gets its own generator: otherwise creating it draws from the global torch RNG,
    and a resumed run would drift one draw away from an uninterrupted one.
    """
    if start >= len(batches):
        return iter(())
    if hasattr(dataset, "batch"):  # a view of a clip store
        return (dataset.batch(b) for b in batches[start:])
    return iter(DataLoader(dataset, batch_sampler=batches[start:], generator=torch.Generator().manual_seed(0)))


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """Move a batch to ``device`` (4-d tensors ``channels_last`` on CUDA)."""
    # not on CPU: with the weights in channels_last too, the quick stage-one step ran about 1.3x
    # faster on 2 cores, but stage one localized worse in each of four seeds (best val IoU@0.5
    # 0.560-0.670, against 0.720-0.845 in the default layout)
    channels_last = device.type == "cuda"
    out = {}
    for k, v in batch.items():
        v = v.to(device, non_blocking=True)
        if channels_last and v.dim() == 4:
            v = v.contiguous(memory_format=torch.channels_last)
        out[k] = v
    return out


def _half(device: torch.device) -> torch.dtype:
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def autocast(device: torch.device):
    """Mixed precision on CUDA: bfloat16 where the GPU has it (Ampere and later), else float16;
    full float32 elsewhere."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=_half(device))
    return nullcontext()


def grad_scaler(device: torch.device) -> torch.amp.GradScaler | None:
    """The loss scaler float16 needs (it reads the device every step to skip overflowing steps);
    None with bfloat16, whose range needs none, and on the CPU."""
    if device.type == "cuda" and _half(device) == torch.float16:
        return torch.amp.GradScaler("cuda")
    return None


class StepRecords:
    """The per-step log records of a training phase, their numbers kept on the device until
    ``flush``: one wait for the device per flush, not one per step. ``flush`` writes them and stops
    training at the first non-finite loss, naming its step (before anything is saved)."""

    def __init__(self, log: "MetricsLog") -> None:
        self.log, self.pending = log, []

    def __len__(self) -> int:
        return len(self.pending)

    def add(self, where: str, record: dict[str, Any], stats: dict[str, torch.Tensor | float]) -> None:
        """One step's host fields (``record``: epoch, phase, step, ...) and numbers (``stats``)."""
        self.pending.append((where, record, stats))

    def flush(self, kept: Path | None) -> dict[str, float]:
        """Write the pending records; returns the last one's numbers ({} when none were pending)."""
        if not self.pending:
            return {}
        numbers = [v for _, _, stats in self.pending for v in stats.values()]
        device = next((v.device for v in numbers if isinstance(v, torch.Tensor)), torch.device("cpu"))
        values = iter(torch.stack([torch.as_tensor(v, device=device).double() for v in numbers]).cpu().tolist())
        pending, self.pending = self.pending, []
        last = {}
        for where, record, stats in pending:
            last = {k: next(values) for k in stats}
            if "loss" in last and not math.isfinite(last["loss"]):
                keep = (f"the last good checkpoint is {kept}" if kept and kept.exists()
                        else "no checkpoint was written yet")
                raise TrainingError(f"loss became {last['loss']} at {where}; training stopped, {keep}")
            self.log.write(**record, **last)
        return last


def optimizer_step(loss: torch.Tensor, optimizers: list[torch.optim.Optimizer],
                   scaler: torch.amp.GradScaler | None) -> None:
    for opt in optimizers:
        opt.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(loss).backward()
        for opt in optimizers:
            scaler.step(opt)
        scaler.update()
    else:
        loss.backward()
        for opt in optimizers:
            opt.step()


def atomic_torch_save(payload: dict[str, Any], path: Path) -> Path:
    """``torch.save`` to a temporary file, then rename: a crash never leaves half a file. When the
    file cannot be written (full disk, read-only folder) the temporary file is removed and a
    ``StorageError`` names the checkpoint; the previous one is left as it was."""
    tmp = path.with_name(path.name + ".part")
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    except (OSError, RuntimeError) as err:  # torch reports a full disk as a RuntimeError
        with suppress(OSError):
            tmp.unlink(missing_ok=True)
        reason = getattr(err, "strerror", None) or str(err).splitlines()[0]
        raise StorageError(path, f"cannot write this checkpoint ({reason}); the previous one is kept. Free space "
                                 f"or make the folder writable, then run again: training resumes") from None
    return path


class MetricsLog:
    """Append-only JSON-lines log of a run (``metrics.jsonl``); ``enabled=False`` writes nothing
    (the ranks other than 0 of a distributed run). A last line cut off by a kill mid-write is
    skipped when reading and dropped before the next record is appended, with a warning each time."""

    def __init__(self, path: Path, enabled: bool = True) -> None:
        self.path, self.enabled = path, enabled
        self._tail_checked = False

    def write(self, **record: Any) -> None:
        if not self.enabled:
            return
        if not self._tail_checked:
            self._drop_cut_line()
            self._tail_checked = True
        with self.path.open("a") as f:
            f.write(json.dumps(record, sort_keys=True) + "\n")

    def _drop_cut_line(self) -> None:
        if not self.path.exists():
            return
        with self.path.open("rb+") as f:
            data = f.read()
            if not data or data.endswith(b"\n"):
                return
            keep = data.rfind(b"\n") + 1
            f.truncate(keep)
        warnings.warn(f"{self.path}: dropped its last line, cut off when a run stopped mid-write: "
                      f"{data[keep:keep + 60].decode(errors='replace')!r}", stacklevel=3)

    def read(self) -> list[dict]:
        if not self.path.exists():
            return []
        lines = self.path.read_text().splitlines()
        records = []
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as err:
                if number < len(lines):
                    raise DataError(self.path, f"line {number} is not valid JSON ({err}); the log is damaged: "
                                               f"move it away and the run goes on without its history") from None
                warnings.warn(f"{self.path}: skipped its last line, cut off when a run stopped mid-write",
                              stacklevel=2)
        return records


def read_checkpoint(path: Path, map_location: str | torch.device = "cpu",
                    missing: str = "checkpoint is missing") -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True`` (no arbitrary code is unpickled); a missing,
    truncated or foreign file is a ``DataError`` naming it. ``payload["settings"]`` is the parsed
    fingerprint (the configuration that made it)."""
    if not path.is_file():
        raise DataError(path, missing)
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
        payload["settings"] = json.loads(payload["fingerprint"])
        if "model" not in payload:
            raise KeyError("model")
    except Exception as err:
        raise DataError(path, f"corrupt or unreadable checkpoint ({type(err).__name__}: {err})") from None
    return payload


class Checkpoints:
    """Atomic, fingerprinted checkpoints in a run folder."""

    def __init__(self, run_dir: str | Path, fingerprint: dict[str, Any]) -> None:
        self.dir = Path(run_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.fingerprint = json.loads(json.dumps(fingerprint, sort_keys=True))

    def path(self, name: str) -> Path:
        return self.dir / f"{name}.pt"

    def save(self, name: str, model: nn.Module, optimizers: dict[str, torch.optim.Optimizer],
             progress: Progress, extra: dict[str, Any] | None = None,
             scaler: torch.amp.GradScaler | None = None) -> Path:
        payload = {
            "fingerprint": json.dumps(self.fingerprint, sort_keys=True),
            "model": model.state_dict(),
            "optimizers": {k: v.state_dict() for k, v in optimizers.items()},
            "scaler": scaler.state_dict() if scaler is not None else None,
            "progress": asdict(progress),
            "rng": {"torch": torch.get_rng_state(),
                    "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []},
            "extra": extra or {},
        }
        return atomic_torch_save(payload, self.path(name))

    def load(self, name: str, map_location: str | torch.device = "cpu") -> dict[str, Any]:
        """Read a checkpoint (``read_checkpoint``) and check it was made with this configuration."""
        path = self.path(name)
        payload = read_checkpoint(path, map_location)
        theirs = payload["settings"]
        if theirs != self.fingerprint:
            diff = sorted(k for k in set(theirs) | set(self.fingerprint) if theirs.get(k) != self.fingerprint.get(k))
            details = ", ".join(f"{k}: {theirs.get(k)!r} there vs {self.fingerprint.get(k)!r} here" for k in diff)
            raise ConfigError(f"{path}: checkpoint was made with another configuration ({details}); "
                              f"use a new run folder or the same settings")
        return payload

    @staticmethod
    def restore(payload: dict[str, Any], model: nn.Module, optimizers: dict[str, torch.optim.Optimizer],
                scaler: torch.amp.GradScaler | None = None) -> Progress:
        model.load_state_dict(payload["model"])
        for k, opt in optimizers.items():
            if k in payload["optimizers"]:
                opt.load_state_dict(payload["optimizers"][k])
        if scaler is not None and payload["scaler"] is not None:
            scaler.load_state_dict(payload["scaler"])
        torch.set_rng_state(payload["rng"]["torch"])
        if payload["rng"]["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(payload["rng"]["cuda"])
        return Progress(**payload["progress"])


def world_fingerprint(world: Any) -> str:
    """What identifies a dataset in a checkpoint's settings: name, clip count and generator fingerprint
    (``world``: its manifest, or its folder)."""
    from dsol_lite.data.schema import DatasetManifest, read_manifest

    manifest = world if isinstance(world, DatasetManifest) else read_manifest(world)
    return f"{manifest.name}:{len(manifest.clips)}:{manifest.source.get('fingerprint', '')}"


def settings_fingerprint(cfg: Any, skip: tuple[str, ...], unless_set: dict[str, object] | None = None) -> dict:
    """The settings of the dataclass ``cfg`` that decide a run's results (``skip``: those that do
    not, such as worker counts). A setting in ``unless_set`` is left out while it has the value
    given there (off), so runs made before the option existed still resume."""
    d = {k: v for k, v in asdict(cfg).items() if k not in skip}
    for key, off in (unless_set or {}).items():
        if d[key] == off:
            del d[key]
    return d


def config_from_settings(cls: type[T], settings: dict[str, Any]) -> T:
    """The inverse of ``settings_fingerprint``: the dataclass ``cls`` from a checkpoint's settings.
    Entries that are not fields (world, dictionary) are dropped, settings left out of the
    fingerprint take their defaults, and JSON's lists become tuples again."""
    names = {f.name for f in fields(cls)}
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in settings.items() if k in names})


class Interrupted(RuntimeError):
    """Raised by ``fit(interrupt_after=...)``: simulates a crash, for resume tests and demos."""


class ResumableRun:
    """What every stage's trainer shares: a run folder with atomic checkpoints, a metrics log,
    the position in the run (``Progress``), periodic saves and a simulated crash.

    A subclass sets ``model``, ``scaler`` and ``cfg.checkpoint_every``, and defines
    ``_optimizers()``, ``_extra_state()`` and ``_load_extra_state(extra)``; then calls
    ``_open_run(run_dir, fingerprint)`` (which resumes when the folder has a ``last.pt``).
    In a distributed run (``ranks``), only rank 0 writes checkpoints, logs and progress bars.
    """

    model: nn.Module
    scaler: torch.amp.GradScaler | None
    progress_bar: bool = True
    ranks: Ranks = Ranks()

    def _open_run(self, run_dir: Path, fingerprint: dict[str, Any], first_phase: str = "localize") -> None:
        self.ckpt = Checkpoints(run_dir, fingerprint)
        self.log = MetricsLog(Path(run_dir) / "metrics.jsonl", enabled=self.ranks.is_main)
        self.steps = StepRecords(self.log)
        self.progress = Progress(phase=first_phase)
        self._interrupt_after: int | None = None
        self.resumed = self.ckpt.path("last").exists()  # False: this object starts the run from its beginning
        if self.resumed:
            self._resume()

    def _optimizers(self) -> dict[str, torch.optim.Optimizer]:
        raise NotImplementedError

    def _writing(self) -> ContextManager:
        """The run folder's write lock, held while training (rank 0 alone writes)."""
        return exclusive(self.ckpt.dir, "this training run") if self.ranks.is_main else nullcontext()

    def _extra_state(self) -> dict[str, Any]:
        return {}

    def _load_extra_state(self, extra: dict[str, Any]) -> None:
        pass

    def _record(self, where: str, record: dict[str, Any], stats: dict[str, torch.Tensor | float], bar=None,
                show: tuple[str, ...] = ("loss",)) -> None:
        """Log one training step (its numbers are read from the device every ``LOG_EVERY`` steps and
        at every save); the progress bar shows the ``show`` numbers of the last step written."""
        self.steps.add(where, record, stats)
        if bar is not None:
            bar.update()
        if len(self.steps) >= LOG_EVERY:
            self._flush(bar, show)
        self._after_step()

    def _flush(self, bar=None, show: tuple[str, ...] = ("loss",)) -> None:
        last = self.steps.flush(self.ckpt.path("last"))
        if bar is not None and last:
            bar.set_postfix({k: f"{last[k]:.3f}" for k in show if k in last}, refresh=False)

    def _save(self, name: str = "last", model: nn.Module | None = None) -> Path:
        """Checkpoint ``model`` (default: the trained model) with this run's optimizers and progress,
        after the steps logged so far are written (and checked finite)."""
        self._flush()
        if not self.ranks.is_main:
            return self.ckpt.path(name)
        model = self.model if model is None else model
        return self.ckpt.save(name, model, self._optimizers(), self.progress, self._extra_state(), self.scaler)

    def _resume(self) -> None:
        payload = self.ckpt.load("last", next(self.model.parameters()).device)
        self.progress = Checkpoints.restore(payload, self.model, self._optimizers(), self.scaler)
        self._load_extra_state(payload["extra"])
        p = self.progress
        self.log.write(phase="resumed", epoch=p.epoch, at_phase=p.phase, step=p.step, global_step=p.global_step)

    def _next_phase(self, phase: str) -> None:
        self.progress.phase, self.progress.step = phase, 0
        self._save()

    def _after_step(self) -> None:
        p = self.progress
        p.step += 1
        p.global_step += 1
        if p.step % self.cfg.checkpoint_every == 0:  # type: ignore[attr-defined]
            self._save()
        if self._interrupt_after is not None and p.global_step >= self._interrupt_after:
            raise Interrupted(f"interrupted after step {p.global_step}")

    def _my_share(self, batches: list[list[int]]) -> list[list[int]]:
        """This rank's part of every global batch (all of it in a single process)."""
        return [shard(b, self.ranks) for b in batches] if self.ranks.enabled else batches

    def _best_from_main(self) -> None:
        """Rank 0 alone validates: every rank takes its ``best`` (a subclass attribute)."""
        if self.ranks.enabled:
            device = next(self.model.parameters()).device
            best = broadcast_from_main(torch.tensor([self.best], dtype=torch.float64, device=device))  # type: ignore
            self.best = float(best)  # type: ignore[attr-defined]

    def _bar(self, total: int, start: int, desc: str, epoch: int | None = None):
        """A progress bar named after ``epoch`` (default: the current one) and the phase ``desc``."""
        # refresh at most every 2 s: in a notebook each refresh is a widget message, and thousands of
        # them overflow the kernel's output channel (nbval then loses the end of the cell)
        epoch = self.progress.epoch if epoch is None else epoch
        return tqdm(total=total, initial=start, desc=f"epoch {epoch} {desc}", unit="batch",
                    disable=not (self.progress_bar and self.ranks.is_main), leave=False, mininterval=2.0)


class EpochRun(ResumableRun):
    """A ``ResumableRun`` of epochs, each a training pass then a validation that keeps the best
    checkpoint. A subclass defines ``_train_epoch()`` and ``_validate()`` (which updates ``best``)."""

    best: float = float("-inf")

    def _extra_state(self) -> dict[str, Any]:
        return {"best": self.best}

    def _load_extra_state(self, extra: dict[str, Any]) -> None:
        self.best = float(extra["best"])

    def _train_epoch(self) -> None:
        raise NotImplementedError

    def _validate(self) -> None:
        raise NotImplementedError

    def _run_epochs(self, interrupt_after: int | None, until_epoch: int | None = None) -> dict[str, int]:
        """Train and validate until ``cfg.epochs`` are done (or only the first ``until_epoch`` of them,
        a clean stop that a later call continues), resuming mid-epoch; returns the position."""
        self._interrupt_after = interrupt_after
        p = self.progress
        stop = self.cfg.epochs if until_epoch is None else min(until_epoch, self.cfg.epochs)  # type: ignore
        with self._writing():
            while p.epoch < stop:
                if p.phase == "train":
                    self._train_epoch()
                    self._next_phase("validate")
                if p.phase == "validate":
                    self._validate()
                    p.epoch += 1
                    self._next_phase("train")
        return {"epochs": p.epoch, "steps": p.global_step}
