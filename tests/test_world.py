"""The synthetic world: determinism, exact ground truth, audio bookkeeping, learnability."""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from dsol_lite.data.images import load_image
from dsol_lite.data.schema import read_clip, read_manifest
from dsol_lite.errors import ConfigError
from dsol_lite.synth import writer
from dsol_lite.synth.config import COVERAGE_LIMITS, preset
from dsol_lite.synth.scenes import ScenePlan, make_scene, plan_scene
from dsol_lite.synth.writer import generate_world


def tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


SMALL = {"solo": (6, 1, 1), "duet": (2, 0, 1), "cocktail": (2, 0, 1), "grid2x2": (2, 0, 1)}


def test_same_seed_gives_identical_files_whatever_the_worker_count(tmp_path):
    cfg = preset("tiny", counts=SMALL)
    a = tree_digest(generate_world(cfg, tmp_path / "a", workers=1, progress=False, chunk=4))
    b = tree_digest(generate_world(cfg, tmp_path / "b", workers=2, progress=False, chunk=4))
    assert a == b and len(a) == 4 * 17 + 1
    c = tree_digest(generate_world(dataclasses.replace(cfg, seed=cfg.seed + 1), tmp_path / "c", progress=False))
    assert c.keys() == a.keys() and c != a


def test_every_box_is_the_tight_box_of_its_mask(tiny_world):
    manifest = read_manifest(tiny_world)
    checked = 0
    for entry in manifest.clips:
        clip = read_clip(manifest, entry.clip_id)
        frame = clip.frames[0]
        labels = load_image(manifest.clip_dir(entry.clip_id) / frame.mask, mode="L")
        assert set(np.unique(labels)) == {0} | {o.mask_value for o in frame.objects}
        for obj in frame.objects:
            ys, xs = np.nonzero(labels == obj.mask_value)
            x1, y1, x2, y2 = obj.box
            assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (x1, y1, x2, y2)
            checked += 1
    assert checked > 100


def test_native_objects_cover_two_to_fifteen_percent(tiny_cfg):
    lo, hi = tiny_cfg.coverage
    assert COVERAGE_LIMITS[0] <= lo and hi <= COVERAGE_LIMITS[1]
    for kind in ("solo", "duet", "cocktail"):
        for i in range(12):
            scene = make_scene(tiny_cfg, kind, "train", i)
            for obj in scene.objects:
                area = (scene.labels == obj.mask_value).mean()
                assert lo <= area <= hi, (kind, i, area)


def test_mixture_is_the_sum_of_its_sources_and_matches_the_file(tiny_cfg, tiny_world):
    noisy = dataclasses.replace(tiny_cfg, noise_snr_db=10.0, offscreen_prob=1.0)
    for kind in ("solo", "duet", "cocktail", "grid2x2"):
        scene = make_scene(noisy, kind, "train", 3)
        total = np.sum([s.waveform for s in scene.sources], axis=0)
        np.testing.assert_allclose(scene.mixture, total, atol=1e-6)
        assert [s.class_id for s in scene.sources if s.class_id is None] == [None]  # the noise
        assert sum(not s.on_screen and s.class_id is not None for s in scene.sources) == 1  # off-screen
    scene = make_scene(tiny_cfg, "duet", "train", 0)
    stored, rate = sf.read(tiny_world / "clips" / "duet-train-00000" / "audio.wav", dtype="float32")
    assert rate == 16000 and len(stored) == len(scene.mixture)
    np.testing.assert_allclose(stored, scene.mixture, atol=1.0 / 32768 + 1e-7)  # 16-bit quantisation


def test_silent_objects_are_flagged_and_contribute_no_audio(tiny_cfg):
    for kind, index in [("cocktail", 0), ("cocktail", 1), ("solo", 0), ("solo", 2)]:
        plan = plan_scene(tiny_cfg, kind, "train", index)
        scene = make_scene(tiny_cfg, kind, "train", index, plan)
        silent = [c for c, s in zip(plan.classes, plan.sounding) if not s]
        heard = [s.class_id for s in scene.sources]
        assert scene.sounding_classes == [c for c, s in zip(plan.classes, plan.sounding) if s]
        assert not set(silent) & set(heard)
        # the same scene without its silent objects sounds exactly the same
        only_sounding = ScenePlan(kind, [c for c, s in zip(plan.classes, plan.sounding) if s],
                                  [True] * len(scene.sounding_classes))
        np.testing.assert_array_equal(make_scene(tiny_cfg, kind, "train", index, only_sounding).mixture,
                                      scene.mixture)
    cocktail = [plan_scene(tiny_cfg, "cocktail", "train", i) for i in range(10)]
    assert all(sum(p.sounding) == 2 and len(p.classes) >= 3 and len(set(p.classes)) == len(p.classes)
               for p in cocktail)


def test_solo_scenes_have_one_source_and_distractors_in_at_least_half(tiny_world, tiny_cfg):
    manifest = read_manifest(tiny_world)
    solos = [read_clip(manifest, e.clip_id) for e in manifest.select("train", ("solo",))]
    with_distractor = [c for c in solos if len(c.frames[0].objects) > 1]
    assert len(with_distractor) >= math.ceil(0.5 * len(solos))
    for clip in solos:
        sounding = clip.frames[0].sounding_objects()
        assert len(sounding) == 1 and [s.label for s in clip.sources] == [sounding[0].label]
        assert len({o.label for o in clip.frames[0].objects}) == len(clip.frames[0].objects)


def test_grid_boxes_land_in_their_quadrants(tiny_cfg):
    half = tiny_cfg.image_size // 2
    for index in range(6):
        plan = plan_scene(tiny_cfg, "grid2x2", "train", index)
        scene = make_scene(tiny_cfg, "grid2x2", "train", index, plan)
        assert len(scene.objects) == 4 and sum(o.sounding for o in scene.objects) == 2
        assert len(scene.sources) == 2
        for q, (obj, class_id, sounding) in enumerate(zip(scene.objects, plan.classes, plan.sounding)):
            x1, y1, x2, y2 = obj.box
            qx, qy = (q % 2) * half, (q // 2) * half
            assert (obj.class_id, obj.sounding) == (class_id, sounding)
            assert qx <= x1 < x2 <= qx + half and qy <= y1 < y2 <= qy + half, (q, obj.box)


def test_world_is_stored_without_pickle(tiny_world):
    suffixes = {p.suffix for p in tiny_world.rglob("*") if p.is_file()}
    assert suffixes == {".json", ".jpg", ".png", ".wav"}


def test_interrupted_generation_leaves_nothing_behind(tmp_path, monkeypatch):
    cfg = preset("tiny", counts=SMALL)
    calls = {"n": 0}
    real = writer.write_scene

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(writer, "write_scene", flaky)
    with pytest.raises(KeyboardInterrupt):
        generate_world(cfg, tmp_path / "w", workers=1, progress=False)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(writer, "write_scene", real)
    (tmp_path / ".w.tmp-99999").mkdir()  # what a killed run would leave
    generate_world(cfg, tmp_path / "w", workers=1, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w"]
    assert writer.is_complete(tmp_path / "w", cfg)


def test_a_script_without_a_main_guard_gets_the_fix_in_the_error(tmp_path):
    """Spawned workers re-run the calling script; the error must say so, not just 'broken pool'."""
    script = tmp_path / "make_world.py"
    script.write_text("from dsol_lite.synth.config import preset\n"
                      "from dsol_lite.synth.writer import generate_world\n"
                      f"generate_world(preset('tiny', counts={{'solo': (4, 0, 0)}}), {str(tmp_path / 'w')!r}, "
                      "workers=2, progress=False, chunk=2)\n")
    env = os.environ | {"PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode != 0
    assert "__name__ == \"__main__\"" in done.stderr and "workers=1" in done.stderr
    assert not (tmp_path / "w").exists()


def test_an_existing_different_folder_is_not_overwritten(tmp_path):
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="out=.*exists"):
        generate_world(preset("tiny", counts=SMALL), tmp_path / "w", progress=False)
    assert (tmp_path / "w" / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize("knobs, parameter", [
    ({"num_classes": 3}, "cocktail_silent"),
    ({"num_classes": 12}, "num_classes"),
    ({"num_classes": 2, "counts": {"duet": (1, 0, 0)}, "offscreen_prob": 0.5}, "num_classes"),
    ({"solo_max_distractors": 8}, "solo_max_distractors"),
    ({"coverage": (0.01, 0.1)}, "coverage"),
    ({"coverage": (0.1, 0.05)}, "coverage"),
    ({"image_size": 33}, "image_size"),
    ({"counts": {"trio": (1, 1, 1)}}, "counts"),
    ({"counts": {"solo": (1, -1, 1)}}, "counts"),
    ({"solo_distractor_fraction": 1.5}, "solo_distractor_fraction"),
    ({"sample_rate": 22050}, "sample_rate"),
])
def test_impossible_configurations_name_the_parameter(knobs, parameter):
    with pytest.raises(ConfigError, match=parameter):
        preset("quick", **knobs)
    with pytest.raises(ConfigError, match="unknown preset"):
        preset("huge")
