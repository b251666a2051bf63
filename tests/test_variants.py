"""Robustness test sets: the test split re-rendered with noise, off-screen sound or silence keeps its
pictures and ground truth exactly, and its audio is what the variant says."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from dsol_lite.errors import ConfigError
from dsol_lite.synth.config import preset
from dsol_lite.synth.scenes import make_scene
from dsol_lite.synth.variants import ROBUSTNESS_VARIANTS, render_robustness_set, robustness_config
from dsol_lite.data.schema import read_clip, read_manifest

TINY = preset("tiny")


def small():
    """A tiny world with a few test scenes of every kind."""
    return dataclasses.replace(TINY, counts={"solo": (2, 1, 4), "duet": (1, 0, 2), "cocktail": (1, 0, 2),
                                             "grid2x2": (1, 0, 2)})


def test_every_variant_keeps_the_pictures_boxes_and_classes_of_the_test_split():
    cfg = small()
    for variant in ROBUSTNESS_VARIANTS:
        vcfg = robustness_config(cfg, variant)
        assert all(c[0] == c[1] == 0 for c in vcfg.counts.values())
        for kind, counts in cfg.counts.items():
            for i in range(counts[2]):
                a, b = make_scene(cfg, kind, "test", i), make_scene(vcfg, kind, "test", i)
                assert np.array_equal(a.image, b.image) and np.array_equal(a.labels, b.labels), (variant, kind, i)
                def boxes(scene):
                    return [(o.class_id, tuple(o.box)) for o in scene.objects]
                assert boxes(a) == boxes(b)
                if variant == "silent":
                    assert not any(o.sounding for o in b.objects)
                else:
                    assert [o.sounding for o in a.objects] == [o.sounding for o in b.objects]


@pytest.mark.parametrize("snr", [20.0, 10.0, 0.0])
def test_noise_sits_exactly_at_its_snr_below_the_objects(snr: float):
    vcfg = robustness_config(small(), f"noise{int(snr)}")
    for kind in ("solo", "cocktail"):
        scene = make_scene(vcfg, kind, "test", 1)
        noise = [s.waveform for s in scene.sources if s.class_id is None]
        objects = np.sum([s.waveform for s in scene.sources if s.class_id is not None], 0)
        assert len(noise) == 1
        measured = 20 * np.log10(np.sqrt(np.mean(objects.astype(np.float64) ** 2)) /
                                 np.sqrt(np.mean(noise[0].astype(np.float64) ** 2)))
        assert abs(measured - snr) < 1e-3, measured
        clean = make_scene(robustness_config(small(), "clean"), kind, "test", 1)
        assert not np.allclose(scene.mixture, clean.mixture)


def test_offscreen_adds_one_sound_whose_object_is_not_in_view():
    cfg = small()
    vcfg = robustness_config(cfg, "offscreen")
    for kind, counts in cfg.counts.items():
        for i in range(counts[2]):
            scene, clean = make_scene(vcfg, kind, "test", i), make_scene(cfg, kind, "test", i)
            off = [s for s in scene.sources if not s.on_screen]
            assert len(off) == 1 and off[0].class_id not in {o.class_id for o in scene.objects}
            assert [s.class_id for s in scene.sources if s.on_screen] == [s.class_id for s in clean.sources]


def test_the_silent_set_is_really_silent_on_disk(tmp_path: Path):
    out = render_robustness_set(small(), tmp_path / "silent", "silent", workers=1, progress=False)
    manifest = read_manifest(out)
    assert {c.split for c in manifest.clips} == {"test"} and len(manifest.clips) == 10
    for entry in manifest.clips:
        clip = read_clip(manifest, entry.clip_id)
        audio, rate = sf.read(manifest.clip_dir(entry.clip_id) / clip.audio, dtype="int16")
        assert rate == 16000 and len(audio) == clip.num_samples and not audio.any()
        assert not any(o.sounding for f in clip.frames for o in f.objects) and not clip.sources


def test_rendering_is_deterministic_and_reused(tmp_path: Path):
    def digest(root: Path) -> str:
        h = hashlib.sha256()
        for p in sorted(root.rglob("*")):
            if p.is_file():
                h.update(str(p.relative_to(root)).encode() + p.read_bytes())
        return h.hexdigest()
    a = render_robustness_set(small(), tmp_path / "a", "noise10", workers=1, progress=False)
    b = render_robustness_set(small(), tmp_path / "b", "noise10", workers=2, progress=False)
    assert digest(a) == digest(b)
    before = (a / "dataset.json").stat().st_mtime_ns
    render_robustness_set(small(), a, "noise10", workers=1, progress=False)  # already there: not rewritten
    assert (a / "dataset.json").stat().st_mtime_ns == before


def test_impossible_variants_are_refused_by_name():
    with pytest.raises(ConfigError, match="variant='noise5'"):
        robustness_config(small(), "noise5")
    with pytest.raises(ConfigError, match="already has noise"):
        robustness_config(dataclasses.replace(small(), noise_snr_db=20.0), "offscreen")
    with pytest.raises(ConfigError, match="silent=True with noise_snr_db"):
        dataclasses.replace(small(), silent=True, noise_snr_db=10.0).validate()


def test_existing_worlds_keep_their_fingerprint():
    assert "silent" not in TINY.to_dict()
    assert "silent" in dataclasses.replace(TINY, silent=True).to_dict()


def test_synth_writes_a_robustness_set_from_the_command_line(tmp_path: Path, capsys):
    from dsol_lite.cli import main

    out = tmp_path / "tiny-offscreen"
    assert main(["synth", "--preset", "tiny", "--test-variant", "offscreen", "--out", str(out), "--workers", "1",
                 "--no-progress"]) == 0
    manifest = read_manifest(out)
    assert {c.split for c in manifest.clips} == {"test"}
    for entry in manifest.clips:
        assert sum(not s.on_screen for s in read_clip(manifest, entry.clip_id).sources) == 1
    assert "synthetic-tiny-test-offscreen" in capsys.readouterr().out
