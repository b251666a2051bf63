"""Loaders return the documented shapes and dtypes; the front end matches DSOL's numbers."""

from __future__ import annotations

import os
import subprocess
import sys

import librosa
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from dsol_lite.config import default_device, is_quick
from dsol_lite.data.audio import AudioConfig, LogMel, crop_window
from dsol_lite.data.datasets import MultiSourceScenes, SoloPairs
from dsol_lite.errors import ConfigError


def test_solo_pairs_items_and_batches(tiny_world):
    data = SoloPairs(tiny_world, "test", image_size=96)
    item = data[0]
    assert item["image"].shape == (3, 96, 96) and item["image"].dtype == torch.float32
    assert item["audio"].shape == (16000,) and item["audio"].dtype == torch.float32
    assert item["label"].dtype == torch.int64 and 0 <= int(item["label"]) < 8
    assert item["gt_mask"].shape == (96, 96) and set(item["gt_mask"].unique().tolist()) == {0.0, 1.0}
    box = data.clips[0].frames[0].sounding_objects()[0].box
    expected = (box[2] - box[0]) * (box[3] - box[1]) * (96 / 160) ** 2
    assert abs(float(item["gt_mask"].sum()) - expected) / expected < 0.15
    batch = next(iter(DataLoader(data, batch_size=4)))
    assert batch["image"].shape == (4, 3, 96, 96) and batch["audio"].shape == (4, 16000)
    assert LogMel()(batch["audio"]).shape == (4, 1, 201, 64)


def test_evaluation_items_are_deterministic_and_training_items_augment(tiny_world):
    evaluation = SoloPairs(tiny_world, "test", image_size=64)
    assert torch.equal(evaluation[1]["image"], evaluation[1]["image"])
    assert torch.equal(evaluation[1]["audio"], evaluation[1]["audio"])
    train = SoloPairs(tiny_world, "train", image_size=64, train=True, seed=3)
    a = train[0]
    assert torch.equal(a["image"], train[0]["image"]) and torch.equal(a["audio"], train[0]["audio"])
    train.set_epoch(1)  # a new epoch draws new augmentations, reproducibly
    b = train[0]
    assert not torch.equal(a["image"], b["image"]) and torch.equal(b["image"], train[0]["image"])
    # the box mask follows the random crop/flip: it stays binary and non-empty
    assert set(a["gt_mask"].unique().tolist()) <= {0.0, 1.0} and a["gt_mask"].sum() > 0


def test_multi_source_items(tiny_world):
    data = MultiSourceScenes(tiny_world, "test", image_size=64)
    kinds = {clip.kind for clip in data.clips}
    assert kinds == {"duet", "cocktail", "grid2x2"}
    for i, clip in enumerate(data.clips):
        item = data[i]
        assert item["class_boxes"].shape == (8, 64, 64) and item["sounding"].shape == (8,)
        assert int(item["sounding"].sum()) == 2
        assert torch.all(item["present"] >= item["sounding"])  # sounding objects are in view
        n_objects = len(clip.frames[0].objects)
        assert int(item["present"].sum()) == n_objects
        assert torch.all((item["class_boxes"].flatten(1).sum(1) > 0) == (item["present"] > 0))


def test_log_mel_is_dsol_shaped_batched_and_close_to_librosa():
    cfg = AudioConfig()
    mel = LogMel(cfg)
    assert mel.empty_bands == 4  # documented: n_fft 160 leaves the lowest bands without a bin
    waves = torch.randn(3, cfg.window_samples) * 0.1
    out = mel(waves)
    assert out.shape == (3, 1, 201, 64) and cfg.num_frames == 201
    torch.testing.assert_close(out[1], mel(waves[1]))  # batched == one at a time
    # same power mel spectrogram as librosa's HTK mel (no filter normalisation), in dB
    ref = librosa.feature.melspectrogram(y=waves[0].numpy(), sr=16000, n_fft=160, hop_length=80, n_mels=64,
                                         fmax=8000, htk=True, norm=None, center=True, pad_mode="reflect")
    ref_db = 10 * np.log10(np.maximum(ref, 1e-10))
    ref_db = np.maximum(ref_db, ref_db.max() - 80)
    filled = mel.fbank.sum(0) > 0
    np.testing.assert_allclose(out[0, 0][:, filled].numpy(), ref_db.T[:, filled.numpy()], atol=0.05)


def test_crop_window_centres_and_pads():
    wave = np.arange(32000, dtype=np.float32)
    w = crop_window(wave, 16000, 1.0)
    assert len(w) == 16000 and w[0] == 8000
    assert crop_window(wave, 16000, 0.1)[0] == 0  # clamped at the start
    short = crop_window(np.ones(4000, np.float32), 16000, 0.1)
    assert len(short) == 16000 and short[4000:].sum() == 0


def test_quick_mode_switch(monkeypatch):
    monkeypatch.delenv("DSOL_QUICK", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a GPU, or Apple's MPS: still quick mode
    assert default_device().type == "cuda" and is_quick()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert default_device().type == "mps" and is_quick()
    monkeypatch.setenv("DSOL_QUICK", "1")
    assert is_quick()
    monkeypatch.setenv("DSOL_QUICK", "0")
    assert not is_quick()
    monkeypatch.setenv("DSOL_QUICK", "yes")
    with pytest.raises(ConfigError, match="DSOL_QUICK"):
        is_quick()


def test_a_notebook_is_quick_unless_it_asks_for_full_mode(monkeypatch):
    from dsol_lite.config import notebook_quick

    monkeypatch.delenv("DSOL_QUICK", raising=False)
    for gpu in ("cuda", "mps"):  # a GPU alone never switches a notebook to full mode
        monkeypatch.setattr(torch.cuda, "is_available", lambda: gpu == "cuda")
        monkeypatch.setattr(torch.backends.mps, "is_available", lambda: gpu == "mps")
        assert default_device().type == gpu and notebook_quick() and not notebook_quick(full=True)
    monkeypatch.setenv("DSOL_QUICK", "0")
    assert not notebook_quick()
    monkeypatch.setenv("DSOL_QUICK", "1")  # the test suite: quick even where a notebook asks for full mode
    assert notebook_quick(full=True)


@pytest.mark.skipif(os.environ.get("CI") != "true", reason="only meaningful on CI")
def test_ci_runs_in_quick_mode():
    """CI must run the notebooks in quick mode; notebooks print the mode and nbval compares it."""
    assert os.environ.get("DSOL_QUICK") == "1"
    assert is_quick()


def test_cli_generates_and_summarises(tmp_path):
    out = tmp_path / "w"
    args = [sys.executable, "-m", "dsol_lite.cli", "synth", "--preset", "tiny", "--out", str(out),
            "--num-classes", "6", "--noise-snr", "20", "--no-progress", "--workers", "1"]
    done = subprocess.run(args, capture_output=True, text=True, check=True)
    assert "scenes/s" in done.stdout and "6 classes" in done.stdout
    again = subprocess.run(args, capture_output=True, text=True, check=True)
    assert "nothing to do" in again.stdout
    bad_args = [sys.executable, "-m", "dsol_lite.cli", "synth", "--preset", "tiny", "--out", str(tmp_path / "x"),
                "--num-classes", "3"]
    bad = subprocess.run(bad_args, capture_output=True, text=True)
    assert bad.returncode == 2 and "cocktail_silent" in bad.stderr and "Traceback" not in bad.stderr
