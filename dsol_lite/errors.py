"""Errors with messages that name the file or parameter at fault.

Notebook: 00_setup_and_data (what happens when data is broken).
"""

from __future__ import annotations

import math
from pathlib import Path


class ConfigError(ValueError):
    """An impossible or inconsistent configuration; the message names the parameter."""


class DataError(ValueError):
    """A data file that cannot be used (missing, corrupt, wrong format)."""

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")


class StorageError(DataError):
    """A file the package writes cannot be written (a full disk, a read-only folder)."""


class AnnotationError(DataError):
    """An annotation file that is malformed or inconsistent with its data."""


def check_settings(cfg: object, positive: tuple[str, ...] = (), non_negative: tuple[str, ...] = (),
                   at_least: dict[str, int] | None = None) -> None:
    """Refuse a setting of the dataclass ``cfg`` outside its range, naming it: ``positive`` numbers
    must be finite and > 0, ``non_negative`` ones finite and >= 0, ``at_least`` integers at least
    the given minimum. A setting that is ``None`` (an optional one left unset) is not checked."""
    for name in positive + non_negative:
        value = getattr(cfg, name)
        bound = "> 0" if name in positive else ">= 0"
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or (
                value <= 0 if name in positive else value < 0):
            raise ConfigError(f"{name}={value!r}: must be a finite number {bound}")
    for name, low in (at_least or {}).items():
        value = getattr(cfg, name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < low):
            raise ConfigError(f"{name}={value!r}: must be a whole number >= {low}")
