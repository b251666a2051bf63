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
    for part in ("visual stream", "audio stream", "whole step", "making a batch", "one epoch: localize"):
        assert part in out
    predicted = [line for line in out.splitlines() if line.startswith("predicted stage one")]
    assert len(predicted) == 1 and float(predicted[0].split(": ")[1].split(" s")[0]) > 0


THROUGHPUT = Path(__file__).parents[1] / "benchmarks" / "gpu_throughput.py"


def test_gpu_throughput_runs_on_the_cpu(tiny_world, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", [str(THROUGHPUT), "--world", str(tiny_world), "--device", "cpu", "--batch", "8",
                                      "--repeats", "1", "--fit-epochs", "1"])
    runpy.run_path(str(THROUGHPUT), run_name="__main__")
    out = capsys.readouterr().out
    for stage in ("stage one (localize): batch 8", "stage two: batch 8"):
        assert stage in out
    ratios = [float(line.split()[3]) for line in out.splitlines() if line.strip().startswith("whole / model")]
    assert len(ratios) == 2 and all(r > 0 for r in ratios)
    assert "stage one fit, 1 epoch(s)" in out and "GPU busy: n/a (not a CUDA device)" in out
