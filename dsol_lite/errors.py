"""Errors with messages that name the file or parameter at fault.

Notebook: 00_setup_and_data (what happens when data is broken).
"""

from __future__ import annotations

from pathlib import Path


class ConfigError(ValueError):
    """An impossible or inconsistent configuration; the message names the parameter."""


class DataError(ValueError):
    """A data file that cannot be used (missing, corrupt, wrong format)."""

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")


class AnnotationError(DataError):
    """An annotation file that is malformed or inconsistent with its data."""
