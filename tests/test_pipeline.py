"""The main job end to end on the tiny world: resume stage by stage, metrics, report, CLI errors."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from dsol_lite.cli import main
from dsol_lite.pipeline import run_pipeline
from dsol_lite.stage_one import STAGE_ONE_PRESETS
from dsol_lite.stage_two import STAGE_TWO_PRESETS, Interrupted, StageTwoTrainer

S1 = dataclasses.replace(STAGE_ONE_PRESETS["quick"], width=8, image_size=64, eval_size=80, epochs=2,
                         batch_size=8, class_passes=1, checkpoint_every=2)
S2 = dataclasses.replace(STAGE_TWO_PRESETS["quick"], batch_size=8, epochs=2, warmup_epochs=1, checkpoint_every=2,
                         eval_size=96)  # solo scenes at stage one's 80 px, multi-source ones at 96, as in the preset
CPU = torch.device("cpu")


def test_pipeline_resumes_an_interrupted_stage_and_writes_the_report(tiny_world, tiny_stage_one, tmp_path):
    import shutil

    run = tmp_path / "runs" / "tiny"
    shutil.copytree(tiny_stage_one, run / "stage_one")  # stage one finished earlier
    with pytest.raises(Interrupted):  # stage two crashed after 3 steps
        StageTwoTrainer(tiny_world, run / "stage_two", run / "stage_one", S2, CPU, False).fit(interrupt_after=3)
    out = run_pipeline("quick", tiny_world, tmp_path / "runs", "tiny", CPU, False, stage_one=S1, stage_two=S2)
    assert out == run
    one = [json.loads(line) for line in (run / "stage_one" / "metrics.jsonl").read_text().splitlines()]
    two = [json.loads(line) for line in (run / "stage_two" / "metrics.jsonl").read_text().splitlines()]
    assert one[-1]["phase"] != "localize"  # stage one was complete: no new training steps
    assert any(r.get("phase") == "resumed" for r in two) and two[-1]["epoch"] == S2.epochs - 1
    results = json.loads((run / "metrics.json").read_text())
    assert set(results["multi"]) == {"cocktail", "grid2x2", "duet"}
    assert results["image_sizes"] == {"train": 64, "solo": 80, "multi_source": 96}
    for rows in results["multi"].values():
        assert {"DSOL stage two", "stage two, no silent filter", "dictionary maps, no audio"} <= set(rows)
        assert 0 <= rows["dictionary maps, no audio"]["nsa"] <= 1
    for row in results["solo"].values():
        assert 0 <= row["dsol_iou@0.5"] <= 1
    report = (run / "report.md").read_text()
    for figure in ("solo_gallery", "class_maps", "clusters", "training_curves"):
        assert (run / "figures" / f"{figure}.png").stat().st_size > 1000
        assert f"figures/{figure}.png" in report
    assert "| DSOL stage two |" in report and "centre prior" in report
    assert "solo scenes scored at 80 px, multi-source scenes at 96 px" in report
    assert results["setup"]["fresh"] == {"world": False, "stage_one": False, "stage_two": False}
    assert "## The course's targets" in report and "made or begun earlier: not timed" in report


def _results(iou: float = 0.785, ciou: float = 0.7, seconds: float = 300.0, fresh: bool = True) -> dict:
    cocktail = {"DSOL stage two": {"ciou@0.3": ciou, "nsa": 0.99}, "stage-one map for every class": {"ciou@0.3": 0.05}}
    return {"solo": {"DSOL stage one": {"dsol_iou@0.5": iou}, "centre prior": {"dsol_iou@0.5": 0.06}},
            "dictionary": {"nmi": 0.914}, "multi": {"cocktail": cocktail},
            "setup": {"seconds": {"world": 50.0, "stage_one": seconds, "stage_two": 70.0, "evaluate": 40.0},
                      "fresh": {"world": fresh, "stage_one": fresh, "stage_two": fresh}}}


def test_course_targets_are_checked_on_the_runs_numbers():
    from dsol_lite.report import course_targets, targets_table

    met = [m for _, _, m in course_targets(_results())]
    # IoU 0.785 < 0.8; 72.5 points over the prior; NMI; CIoU 0.7 (a float32 0.69999999 counts as 0.7); NSA;
    # stage two over the stage-one map; 300 s <= 360 s; 460 s for the whole run
    assert met == [False, True, True, True, True, True, True, True]
    float32_ciou = float(torch.tensor(140 / 200, dtype=torch.float32))
    assert float32_ciou < 0.7 and course_targets(_results(ciou=float32_ciou))[3][2] is True
    assert course_targets(_results(ciou=0.69))[3][2] is False
    slow = course_targets(_results(iou=0.8, seconds=400.0))
    assert slow[0][2] is True and slow[-2][1:] == ("400 s", False) and slow[-1][2] is True  # 560 s in all
    resumed = course_targets(_results(fresh=False))
    assert [m for _, _, m in resumed][-2:] == [None, None]
    table = targets_table(resumed)
    assert "| solo IoU@0.5 (DSOL protocol, stage one) >= 0.8 | 0.785 | **no** |" in table and "| – |" in table
    no_cocktails = _results()
    no_cocktails["multi"] = {}
    assert len(course_targets(no_cocktails)) == 5


def test_cli_run_reports_an_impossible_config(tiny_world, tmp_path, capsys):
    # the quick preset's stage-two batch of 32 scenes is larger than the tiny world's 24 multi-source
    # training scenes: said from the manifest before stage one trains, not after
    code = main(["run", "--world", str(tiny_world), "--runs", str(tmp_path), "--device", "cpu", "--no-progress"])
    assert code == 2
    err = capsys.readouterr().err
    assert "stage two: batch_size=32 is larger than the 24 training scenes" in err and str(tiny_world) in err
    assert not (tmp_path / "quick" / "stage_one").exists()
