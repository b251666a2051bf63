"""The committed sample world is valid and is what the current code generates."""

from __future__ import annotations

import json

import numpy as np

from conftest import SAMPLES
from dsol_lite.data.datasets import MultiSourceScenes, SoloPairs
from dsol_lite.data.images import load_image
from dsol_lite.data.schema import read_clip, read_manifest
from dsol_lite.synth.config import preset
from dsol_lite.synth.writer import generate_world


def test_sample_world_loads_and_is_small():
    manifest = read_manifest(SAMPLES)
    assert {c.kind for c in manifest.clips} == {"solo", "duet", "cocktail", "grid2x2"}
    for entry in manifest.clips:
        read_clip(manifest, entry.clip_id)
    assert len(SoloPairs(SAMPLES, "test")) == 6 and len(MultiSourceScenes(SAMPLES, "test")) == 7
    size = sum(p.stat().st_size for p in SAMPLES.rglob("*") if p.is_file())
    assert size < 4_000_000


def test_sample_world_is_reproduced_by_the_current_code(tmp_path):
    cfg = preset("sample")
    fresh = generate_world(cfg, tmp_path / "sample", progress=False)
    assert json.loads((SAMPLES / "dataset.json").read_text()) == json.loads((fresh / "dataset.json").read_text())
    for entry in read_manifest(SAMPLES).clips:
        a, b = SAMPLES / "clips" / entry.clip_id, fresh / "clips" / entry.clip_id
        assert json.loads((a / "clip.json").read_text()) == json.loads((b / "clip.json").read_text())
        np.testing.assert_array_equal(load_image(a / "mask_000.png", mode="L"),
                                      load_image(b / "mask_000.png", mode="L"))
