"""Runtime settings: quick mode, the compute device, and an environment report.

Notebook: 00_setup_and_data.

Quick mode trains small on a CPU in minutes; full mode reproduces the papers on a GPU.
Quick mode is on when ``DSOL_QUICK=1``, or when no GPU is found and ``DSOL_QUICK`` is unset.
``DSOL_QUICK=0`` forces full mode.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import sys
from typing import TypeVar

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
    """Whether to use the quick (CPU) presets."""
    flag = os.environ.get("DSOL_QUICK")
    if flag is None or flag == "":
        return default_device().type == "cpu"
    if flag not in ("0", "1"):
        raise ConfigError(f"DSOL_QUICK={flag!r}: set it to 1 (quick) or 0 (full)")
    return flag == "1"


def with_overrides(cfg: T, pairs: list[str]) -> T:
    """A copy of the dataclass ``cfg`` with ``KEY=VALUE`` settings (``--set`` on the command line).

    Values are read as the field's type (``none`` for optional fields; ``true``/``false``).
    """
    fields = {f.name: str(f.type) for f in dataclasses.fields(cfg)}  # type: ignore[arg-type]
    changes = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or key not in fields:
            raise ConfigError(f"--set {pair!r}: expected KEY=VALUE with KEY one of {', '.join(fields)}")
        kind = fields[key]
        try:
            if text.lower() == "none" and "None" in kind:
                value = None
            elif kind.startswith("bool"):
                if text.lower() not in ("true", "false", "1", "0"):
                    raise ValueError("use true or false")
                value = text.lower() in ("true", "1")
            elif kind.startswith("int"):
                value = int(text)
            elif kind.startswith("float"):
                value = float(text)
            else:
                value = text
        except ValueError as err:
            raise ConfigError(f"--set {pair!r}: {key} is {kind} ({err})") from None
        changes[key] = value
    return dataclasses.replace(cfg, **changes)  # type: ignore[type-var]


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


def setup_notebook(seed: int = 0) -> tuple[torch.device, bool]:
    """Seed everything and print the device and mode (stable text, so nbval can compare it)."""
    import random

    import numpy as np

    _compact_figures()
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    device, quick = default_device(), is_quick()
    print(f"device: {device.type} | mode: {'quick' if quick else 'full'}")
    return device, quick
