"""Runtime settings: quick mode, the compute device, and an environment report.

Notebook: 00_setup_and_data.

Quick mode trains small, in minutes on a laptop CPU (faster on a GPU); full mode trains at
DSOL's scale on a GPU. Quick mode is the default on every device: a GPU makes quick mode
faster, not bigger. Full mode only when asked: ``DSOL_QUICK=0`` (notebooks) or ``--preset full``.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import sys
import types
import typing
from typing import Any, TypeVar

import torch

from dsol_lite.errors import ConfigError

T = TypeVar("T")


def default_device() -> torch.device:
    """CUDA if present, else Apple's MPS, else CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def is_quick() -> bool:
    """Whether to use the quick presets: yes unless ``DSOL_QUICK=0`` asks for full mode, whatever
    the device (a GPU or Apple's MPS does not change the mode)."""
    flag = os.environ.get("DSOL_QUICK")
    if flag is None or flag == "":
        return True
    if flag not in ("0", "1"):
        raise ConfigError(f"DSOL_QUICK={flag!r}: set it to 1 (quick) or 0 (full)")
    return flag == "1"


def _parse(text: str, kind: Any, key: str) -> Any:
    """``text`` read as the type ``kind`` of the setting ``key`` (see ``with_overrides``)."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (types.UnionType, typing.Union):
        if text.lower() == "none" and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _parse(text, inner, key)
    if origin is tuple:
        items = [t.strip() for t in text.split(",") if t.strip()]
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_parse(t, args[0], key) for t in items)
        if len(items) != len(args):
            raise ValueError(f"give {len(args)} comma-separated values")
        return tuple(_parse(t, a, key) for t, a in zip(items, args))
    if kind is bool:
        if text.lower() not in ("true", "false", "1", "0"):
            raise ValueError("use true or false")
        return text.lower() in ("true", "1")
    if kind in (int, float, str):
        return kind(text)
    raise ValueError("cannot be set from the command line")


def with_overrides(cfg: T, pairs: list[str], prefix: str = "") -> T:
    """A copy of the dataclass ``cfg`` with ``KEY=VALUE`` settings (``--set`` on the command line).

    Values are read as the field's type: ``none`` for optional fields, ``true``/``false``, and
    comma-separated items for tuples (``kinds=duet,cocktail``, ``fnac_weights=1,1,1``). ``prefix``
    (e.g. ``stage_two.``) is how the command line names the settings, for messages.
    """
    hints = typing.get_type_hints(type(cfg))
    names = [f.name for f in dataclasses.fields(cfg)]  # type: ignore[arg-type]
    changes = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or key not in names:
            raise ConfigError(f"--set {prefix}{pair}: expected {prefix}KEY=VALUE with KEY one of {', '.join(names)}")
        try:
            changes[key] = _parse(text, hints[key], key)
        except ValueError as err:
            kind = hints[key]
            shown = kind.__name__ if isinstance(kind, type) else str(kind).replace("typing.", "")
            raise ConfigError(f"--set {prefix}{pair}: {prefix}{key} is {shown} ({err})") from None
    return dataclasses.replace(cfg, **changes)  # type: ignore[type-var]


def parse_device(name: str | None) -> torch.device:
    """The device called ``name`` (``cpu``, ``cuda``, ``cuda:1``, ``mps``; None: ``default_device()``),
    refused with a clear message when it is not a device name or this computer has no such device."""
    if name is None:
        return default_device()
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"--device {name}: not a device name; use cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
            raise ConfigError(f"--device {name}: PyTorch finds no CUDA GPU here (torch {torch.__version__}, {build}); "
                              f"use --device cpu, or leave --device out to take the best device found")
        if device.index is not None and device.index >= count:
            raise ConfigError(f"--device {name}: there are {count} CUDA GPU(s), numbered 0 to {count - 1}")
    elif device.type == "mps":
        if getattr(torch.backends, "mps", None) is None or not torch.backends.mps.is_available():
            raise ConfigError(f"--device {name}: Apple's MPS is not available here; use --device cpu")
    elif device.type != "cpu":
        raise ConfigError(f"--device {name}: dsol_lite runs on cpu, cuda or mps")
    return device


def in_colab() -> bool:
    return "google.colab" in sys.modules


def environment_report() -> dict[str, str]:
    """Versions and hardware, for the first cell of every notebook."""
    import torchaudio
    import torchvision

    from dsol_lite import __version__

    device = default_device()
    report = {
        "dsol_lite": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchaudio": torchaudio.__version__,
        "torchvision": torchvision.__version__,
        "device": str(device),
        "cpu threads": str(torch.get_num_threads()),
    }
    if device.type == "cuda":
        report["gpu"] = torch.cuda.get_device_name(0)
    return report


def _compact_figures() -> None:
    """Inline figures as JPEG at 80 dpi: stored notebooks stay small (nbval does not compare images)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return
    shell = get_ipython()
    if shell is None:
        return
    import matplotlib.pyplot as plt

    shell.run_line_magic("matplotlib", "inline")
    shell.run_line_magic("config", "InlineBackend.figure_formats = ['jpeg']")
    plt.rcParams.update({"figure.dpi": 80, "savefig.dpi": 80})


def notebook_quick(full: bool = False) -> bool:
    """A notebook's mode: quick unless it asks for full mode (its ``FULL`` parameter, or ``DSOL_QUICK=0``);
    ``DSOL_QUICK=1`` keeps quick mode even then (the test suite runs every notebook that way)."""
    if os.environ.get("DSOL_QUICK") == "1":
        return True
    return not full and is_quick()


def setup_notebook(seed: int = 0, full: bool = False) -> tuple[torch.device, bool]:
    """Seed everything, choose the mode (``notebook_quick(full)``) and print the device and mode
    (stable text, so nbval can compare it). Returns ``(device, quick)``."""
    import random

    import numpy as np

    _compact_figures()
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    device, quick = default_device(), notebook_quick(full)
    print(f"device: {device.type} | mode: {'quick' if quick else 'full'}")
    return device, quick
