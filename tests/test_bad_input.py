"""Bad input gets a clear error naming the file and the problem (or a documented fix-up)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from dsol_lite.data.audio import load_audio
from dsol_lite.data.datasets import MultiSourceScenes, SoloPairs
from dsol_lite.data.images import load_image
from dsol_lite.data.schema import read_clip, read_manifest
from dsol_lite.errors import AnnotationError, DataError


# ---- audio ---------------------------------------------------------------------------------

def test_corrupt_audio_names_the_file(tmp_path):
    path = tmp_path / "noise.wav"
    path.write_bytes(b"RIFF\x00\x00\x00\x00WAVEgarbage" + bytes(range(50)))
    with pytest.raises(DataError, match="noise.wav: cannot decode audio"):
        load_audio(path)


def test_empty_and_missing_audio(tmp_path):
    sf.write(tmp_path / "empty.wav", np.zeros(0, np.float32), 16000)
    with pytest.raises(DataError, match="empty.wav: audio file holds no samples"):
        load_audio(tmp_path / "empty.wav")
    with pytest.raises(DataError, match="gone.wav: audio file is missing"):
        load_audio(tmp_path / "gone.wav")


def test_stereo_is_averaged_to_mono(tmp_path):
    left, right = np.linspace(-0.5, 0.5, 1600, dtype=np.float32), np.full(1600, 0.25, np.float32)
    sf.write(tmp_path / "stereo.wav", np.stack([left, right], 1), 16000, subtype="FLOAT")
    np.testing.assert_allclose(load_audio(tmp_path / "stereo.wav"), (left + right) / 2, atol=1e-7)


def test_wrong_rate_is_resampled_or_refused(tmp_path):
    t = np.arange(22050) / 22050
    sf.write(tmp_path / "a.wav", (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 22050, subtype="FLOAT")
    wave = load_audio(tmp_path / "a.wav", 16000)
    assert wave.dtype == np.float32 and abs(len(wave) - 16000) <= 1
    spectrum = np.abs(np.fft.rfft(wave))
    assert abs(np.argmax(spectrum) * 16000 / len(wave) - 440) < 2  # still an A4
    with pytest.raises(DataError, match="a.wav: sample rate is 22050 Hz, expected 16000 Hz"):
        load_audio(tmp_path / "a.wav", 16000, resample=False)


def test_nan_audio_is_refused(tmp_path):
    sf.write(tmp_path / "nan.wav", np.array([0.0, np.nan, 0.1], np.float32), 16000, subtype="FLOAT")
    with pytest.raises(DataError, match="nan.wav: audio contains NaN"):
        load_audio(tmp_path / "nan.wav")


# ---- images --------------------------------------------------------------------------------

def test_truncated_missing_and_wrong_size_images(tmp_path):
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)).save(tmp_path / "f.jpg")
    data = (tmp_path / "f.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="cut.jpg: cannot decode image"):
        load_image(tmp_path / "cut.jpg")
    (tmp_path / "text.jpg").write_text("not an image")
    with pytest.raises(DataError, match="text.jpg: cannot decode image"):
        load_image(tmp_path / "text.jpg")
    with pytest.raises(DataError, match="nope.jpg: image file is missing"):
        load_image(tmp_path / "nope.jpg")
    with pytest.raises(DataError, match="f.jpg: image is 64x64 but its annotation says 32x64"):
        load_image(tmp_path / "f.jpg", (32, 64))
    assert load_image(tmp_path / "f.jpg", (64, 64)).shape == (64, 64, 3)


# ---- annotations ---------------------------------------------------------------------------

@pytest.fixture
def world_copy(tiny_world, tmp_path) -> Path:
    return Path(shutil.copytree(tiny_world, tmp_path / "copy"))


def _edit_clip(root: Path, clip_id: str, edit) -> Path:
    path = root / "clips" / clip_id / "clip.json"
    d = json.loads(path.read_text())
    edit(d)
    path.write_text(json.dumps(d))
    return path


@pytest.mark.parametrize("edit, message", [
    (lambda d: d["frames"][0]["objects"][0].__setitem__("box", [150, 10, 170, 40]), r"lies outside the 160x160"),
    (lambda d: d["frames"][0]["objects"][0].__setitem__("box", [10, 10, 10, 40]), r"is empty or lies outside"),
    (lambda d: d["frames"][0]["objects"][0].__setitem__("box", [1.5, 2, 30, 40]), r"box must be four integers"),
    (lambda d: d["frames"][0]["objects"][0].__setitem__("label", "banjo"), r"'banjo' is not a class"),
    (lambda d: d["frames"][0]["objects"][0].pop("sounding"), r"objects\[0\]\.sounding is missing"),
    (lambda d: d["frames"][0]["objects"][0].__setitem__("sounding", "yes"), r"sounding must be bool"),
    (lambda d: d["frames"][0]["objects"][0].__setitem__("sounding", False), r"marked silent but an on-screen"),
    (lambda d: d.__setitem__("sources", []), r"marked sounding but no on-screen source"),
    (lambda d: d.__setitem__("sample_rate", 44100), r"sample_rate 44100 differs"),
    (lambda d: d["frames"][0].__setitem__("time", 9.0), r"time 9.0 s lies outside"),
    (lambda d: d.__setitem__("frames", []), r"frames is empty"),
    (lambda d: d.__setitem__("clip_id", "other"), r"does not match its folder"),
    (lambda d: d.__setitem__("schema", "v0"), r"schema 'v0'"),
])
def test_malformed_or_inconsistent_clip_annotations(world_copy, edit, message):
    path = _edit_clip(world_copy, "solo-test-00000", edit)
    with pytest.raises(AnnotationError, match=message) as err:
        read_clip(read_manifest(world_copy), "solo-test-00000")
    assert str(path) in str(err.value)


def test_invalid_json_and_missing_manifest(world_copy, tmp_path):
    path = world_copy / "clips" / "solo-test-00001" / "clip.json"
    path.write_text('{"schema": "dsol_lite.clip/1", ')
    with pytest.raises(AnnotationError, match="clip.json: not valid JSON"):
        read_clip(read_manifest(world_copy), "solo-test-00001")
    with pytest.raises(DataError, match="no dataset.json"):
        read_manifest(tmp_path)
    manifest = world_copy / "dataset.json"
    d = json.loads(manifest.read_text())
    d["clips"].append(d["clips"][0])
    manifest.write_text(json.dumps(d))
    with pytest.raises(AnnotationError, match="is repeated"):
        read_manifest(world_copy)


def test_dataset_reports_missing_and_broken_files_by_name(world_copy, tiny_world):
    # the clip store decodes a split when a dataset first opens it: a bad file is named then, before training
    frame = world_copy / "clips" / "solo-test-00002" / "frame_000.jpg"
    frame.unlink()
    with pytest.raises(DataError, match="solo-test-00002/frame_000.jpg: image file is missing"):
        SoloPairs(world_copy, "test", image_size=64)
    shutil.copy(tiny_world / "clips" / "solo-test-00002" / "frame_000.jpg", frame)
    (world_copy / "clips" / "solo-test-00003" / "audio.wav").write_bytes(b"\x00" * 10)
    with pytest.raises(DataError, match="solo-test-00003/audio.wav: cannot decode audio"):
        SoloPairs(world_copy, "test", image_size=64)


def test_audio_shorter_than_its_annotation_is_refused(world_copy):
    sf.write(world_copy / "clips" / "solo-test-00004" / "audio.wav", np.zeros(8000, np.float32), 16000)
    with pytest.raises(DataError, match="holds 8000 samples but its annotation says 32000"):
        SoloPairs(world_copy, "test", image_size=64)


def test_a_split_without_clips_is_an_error(tmp_path):
    from dsol_lite.synth.config import preset
    from dsol_lite.synth.writer import generate_world

    root = generate_world(preset("tiny", counts={"solo": (2, 0, 1)}), tmp_path / "w", progress=False)
    with pytest.raises(DataError, match="no solo clips in split 'val'"):
        SoloPairs(root, "val")
    with pytest.raises(DataError, match="no duet/cocktail/grid2x2 clips in split 'test'"):
        MultiSourceScenes(root, "test")
