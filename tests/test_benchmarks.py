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


PARTS = Path(__file__).parents[1] / "benchmarks" / "peer_epoch_parts.py"


def test_peer_epoch_parts_shares_add_up_and_see_alignment_s_second_view(tiny_world, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", [str(PARTS), "--world", str(tiny_world), "--methods", "ezvsl", "alignment",
                                      "--width", "8", "--size", "64", "--batch", "8"])
    runpy.run_path(str(PARTS), run_name="__main__")
    rows = {line.split()[0]: [float(x) for x in line.split()[1:]] for line in capsys.readouterr().out.splitlines()
            if line.split()[:1] in (["ezvsl"], ["alignment"])}
    assert set(rows) == {"ezvsl", "alignment"}
    for method, (seconds, *shares) in rows.items():
        parts, rest, second_view = shares[:5], shares[5], shares[6]
        assert seconds > 0 and all(s > 0 for s in parts), method  # every part was seen
        assert abs(sum(parts) + rest - 100) < 0.2 and rest > -0.1, method  # shares of one epoch, none counted twice
        assert (second_view > 0) == (method == "alignment") and second_view < parts[1], method
