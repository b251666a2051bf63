"""The lecturer's stage-one budget benchmark runs and reports every part and a prediction."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

BUDGET = Path(__file__).parents[1] / "benchmarks" / "stage_one_budget.py"


def test_stage_one_budget_times_each_part_and_predicts(tiny_world, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", [str(BUDGET), "--data", str(tiny_world), "--repeats", "1"])
    runpy.run_path(str(BUDGET), run_name="__main__")
    out = capsys.readouterr().out
    for part in ("visual stream", "audio stream", "whole step", "loading + augmenting a batch", "one epoch: localize"):
        assert part in out
    predicted = [line for line in out.splitlines() if line.startswith("predicted stage one")]
    assert len(predicted) == 1 and float(predicted[0].split(": ")[1].split(" s")[0]) > 0
