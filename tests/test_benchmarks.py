"""The benchmarks run on a tiny world and report what they promise: every part, a prediction, a ratio."""

from __future__ import annotations

import runpy
import sys
import time
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



EPOCH_PARTS = Path(__file__).parents[1] / "benchmarks" / "peer_epoch_parts.py"


def test_peer_epoch_parts_times_every_part_and_alignment_s_second_view(tiny_world, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", [str(EPOCH_PARTS), "--world", str(tiny_world), "--methods", "fnac", "alignment",
                                      "--width", "8", "--size", "64", "--batch", "8"])
    runpy.run_path(str(EPOCH_PARTS), run_name="__main__")
    rows = {line.split()[0]: [float(x) for x in line.split()[1:]] for line in capsys.readouterr().out.splitlines()
            if line.split()[:1] in (["fnac"], ["alignment"])}
    assert set(rows) == {"fnac", "alignment"}
    for method, (seconds, *shares) in rows.items():
        parts, second_view = shares[:5], shares[6]
        assert seconds > 0 and all(s > 0 for s in parts), method  # every part was seen
        assert (second_view > 0) == (method == "alignment") and second_view < parts[1], method


def test_the_stopwatch_counts_a_nested_call_once_and_puts_everything_back():
    from dsol_lite import methods, training
    from dsol_lite.data.datasets import SoloPairs

    stopwatch = runpy.run_path(str(EPOCH_PARTS))["Stopwatch"]()
    save, step = training.Checkpoints.save, methods.optimizer_step

    class Trainer:
        def validate(self) -> None:
            time.sleep(0.02)
            self.save()

        def save(self) -> None:
            time.sleep(0.03)

    targets = [(Trainer, "validate", "validation"), (Trainer, "save", "writes"), (SoloPairs, "batch", "batches"),
               (methods, "optimizer_step", "step"), (training.Checkpoints, "save", "writes")]
    with stopwatch.watching(targets):
        assert "batch" in vars(SoloPairs) and methods.optimizer_step is not step
        Trainer().validate()
        Trainer().save()
    assert set(stopwatch.seconds) == {"validation", "writes"}
    assert 0.05 <= stopwatch.seconds["validation"] < 0.05 + 0.5  # the write inside it counted there, once
    assert 0.03 <= stopwatch.seconds["writes"] < 0.03 + 0.5
    assert "batch" not in vars(SoloPairs)  # inherited: the wrapper is gone, not left on the subclass
    assert methods.optimizer_step is step and training.Checkpoints.save is save
    assert Trainer.__dict__["save"].__name__ == "save" and not hasattr(Trainer.__dict__["save"], "__wrapped__")
