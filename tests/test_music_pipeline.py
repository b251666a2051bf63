"""The whole pipeline on prepared MUSIC-like videos (made locally): solo clips with test boxes,
DSOL's 2x2 scenes, duets with boxes; stage two trains on 2x2 scenes, then on duets."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from dsol_lite.data.annotations import read_boxes, read_music_index
from dsol_lite.data.music import PrepareConfig, prepare_music
from dsol_lite.data.video import make_video
from dsol_lite.errors import ConfigError, DataError
from dsol_lite.pipeline import run_pipeline
from dsol_lite.stage_one import StageOneConfig
from dsol_lite.stage_two import STAGE_TWO_PRESETS, StageTwoConfig

KEYS = (30, 37, 44, 51, 60)
IDS = {"flute": 12, "cello": 1, "violin": 11, "trumpet": 10}


def _dsol_boxes(videos: dict[str, list[str]]) -> dict:
    """DSOL-format boxes: each video's classes side by side, at every key frame."""
    out = {}
    for video, classes in videos.items():
        boxes = [{"box": [10 + 70 * i, 20, 60, 50], "normbox": [(10 + 70 * i) / 160, 20 / 90, 60 / 160, 50 / 90],
                  "category_id": IDS[c]} for i, c in enumerate(classes)]
        for n in KEYS:
            out[f"{video}_0_1000/frame_{n // 30:03d}/{n:05d}.jpg"] = {"bbox": boxes, "wdith": 160, "height": 90}
    return out


@pytest.fixture(scope="module")
def music(tmp_path_factory) -> Path:
    src, out = tmp_path_factory.mktemp("src"), tmp_path_factory.mktemp("music") / "music"
    solo = {f"{c[:5]}{k}{'x' * (6 - len(c[:5]))}{k}": [c] for c in IDS for k in "AB"}
    solo |= {"fluteC25xxx": ["flute"], "celloC30xxx": ["cello"]}
    duet = {"duetFC25xxx": ["flute", "cello"], "duetVT30xxx": ["violin", "trumpet"],
            "duetFT30xxx": ["flute", "trumpet"]}
    for i, v in enumerate([*solo, *duet]):
        make_video(src / "videos" / f"{v}.mp4", 3.0, (25, 30)[i % 2], size=(160, 90))
    for kind, videos, boxed in (("solo", solo, ("fluteC25xxx", "celloC30xxx")),
                                ("duet", duet, ("duetFC25xxx", "duetVT30xxx"))):
        index = src / f"{kind}.json"
        by_class: dict[str, list[str]] = {}
        for v, classes in videos.items():
            by_class.setdefault(" ".join(classes), []).append(v)
        index.write_text(json.dumps({"videos": by_class}))
        (src / f"{kind}_boxes.json").write_text(json.dumps(_dsol_boxes({v: videos[v] for v in boxed})))
        cfg = PrepareConfig(segment_seconds=1.5, frames_per_segment=2, frame_height=72, val_videos=1,
                            grid2x2=6 if kind == "duet" else 0)
        prepare_music(out, read_music_index(index), src / "videos", read_boxes(src / f"{kind}_boxes.json"), cfg,
                      progress=False)
    return out


def test_music_preset_schedule_and_pipeline(music, tmp_path):
    preset = STAGE_TWO_PRESETS["music"]
    assert preset.kinds_at(0) == ("grid2x2",) and preset.kinds_at(4) == ("duet",)
    s1 = StageOneConfig(width=4, image_size=64, batch_size=4, epochs=2, num_clusters=4, class_passes=1,
                        class_lr=0.0, checkpoint_every=1000)
    s2 = dataclasses.replace(preset, batch_size=2, epochs=3, finetune_from=2)
    run = run_pipeline("music", music, tmp_path / "runs", "m", torch.device("cpu"), False, s1, s2)

    records = [json.loads(line) for line in (run / "stage_two" / "metrics.jsonl").read_text().splitlines()]
    steps = {}
    for r in records:
        if r["phase"] == "train":
            steps[r["epoch"]] = steps.get(r["epoch"], 0) + 1
    assert steps == {0: 6 // 2, 1: 6 // 2, 2: 2 // 2}  # 6 2x2 scenes, then 1 training duet video = 2 clips
    results = json.loads((run / "metrics.json").read_text())
    assert set(results["multi"]) == {"duet"}  # the test split has duets only
    assert "silent_objects" in results and results["silent_objects"] == {}
    assert 0.0 <= results["solo"]["DSOL stage one"]["dsol_iou@0.5"] <= 1.0
    report = (run / "report.md").read_text()
    assert "### duet" in report and (run / "figures" / "class_maps.png").is_file()


def test_music_preset_needs_prepared_data(tmp_path):
    with pytest.raises(ConfigError, match="prepare-music"):
        run_pipeline("music", None, tmp_path, progress=False)
    with pytest.raises(DataError, match="prepare-music"):
        run_pipeline("music", tmp_path / "nothing", tmp_path, progress=False)
    with pytest.raises(ConfigError, match="finetune_from=5"):
        StageTwoConfig(epochs=5, finetune_kinds=("duet",), finetune_from=5).validate()
    with pytest.raises(ConfigError, match="finetune_kinds"):
        StageTwoConfig(finetune_kinds=("solo",), finetune_from=1).validate()
