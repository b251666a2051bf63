"""Training-time noise and off-screen augmentation: exact levels, reproducible draws, off by default."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from dsol_lite.data.audio_augment import (NOISE_ON, OFF_CLIP, OFF_ON, SNR, SNR_RANGE_DB, AudioAugment, add_noise,
                                          coloured_noise, noise_draws, rms)
from dsol_lite.data.datasets import SoloPairs
from dsol_lite.errors import ConfigError
from dsol_lite.methods import PEER_PRESETS, PeerConfig
from dsol_lite.stage_one import StageOneConfig


def test_noise_is_added_at_the_drawn_snr_to_the_drawn_items_only():
    torch.manual_seed(0)
    audio = torch.randn(64, 16000) * torch.linspace(0.1, 1.0, 64)[:, None]
    index = torch.arange(64)
    u = noise_draws(3, 1, index)
    out = add_noise(audio, u, 0.5, 3, 1, index)
    on = u[:, NOISE_ON] < 0.5
    assert 10 < int(on.sum()) < 54  # about half
    assert torch.equal(out[~on], audio[~on])
    snr = 20 * torch.log10(rms(audio[on]) / rms(out[on] - audio[on]))[:, 0]
    expected = SNR_RANGE_DB[0] + (SNR_RANGE_DB[1] - SNR_RANGE_DB[0]) * u[on, SNR]
    assert torch.allclose(snr.double(), expected, atol=1e-3)
    assert torch.equal(add_noise(audio, u, 0.0, 3, 1, index), audio)
    narrow = add_noise(audio, u, 0.5, 3, 1, index, snr_db=(10.0, 20.0))
    snr = 20 * torch.log10(rms(audio[on]) / rms(narrow[on] - audio[on]))[:, 0]
    assert torch.allclose(snr.double(), 10.0 + 10.0 * u[on, SNR], atol=1e-3)


def test_coloured_noise_has_unit_rms_and_its_slope():
    u = torch.rand(2, 8001, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    white, pink = coloured_noise(u, torch.tensor([0.0, 1.0]), 16000)
    assert torch.allclose(rms(torch.stack([white, pink]))[:, 0], torch.ones(2), atol=1e-5)

    def low(x):  # the fraction of the power in the lowest tenth of the frequencies
        power = torch.fft.rfft(x.double()).abs().pow(2)
        return power[1:800].sum() / power.sum()
    assert 0.08 < low(white) < 0.12  # a tenth of the bins, a tenth of the power
    assert low(pink) > 0.5  # 1/f: most of the power at low frequencies


def test_an_item_hears_the_same_augmentation_whatever_batch_it_is_in(tiny_world):
    aug = AudioAugment(noise_prob=0.5, offscreen_prob=0.5)
    ds = SoloPairs(tiny_world, "train", image_size=64, train=True, masks=False, audio_augment=aug, seed=2)
    plain = SoloPairs(tiny_world, "train", image_size=64, train=True, masks=False, seed=2)
    n = len(ds)
    whole = ds.batch(list(range(n)))["audio"]
    alone = torch.stack([ds.batch([i])["audio"][0] for i in reversed(range(n))]).flip(0)
    assert torch.allclose(whole, alone, atol=1e-6)
    clean = plain.batch(list(range(n)))["audio"]
    changed = ~torch.isclose(whole, clean, atol=1e-7).all(1)
    assert changed.any() and not changed.all()  # some items, not all
    ds.set_epoch(1)
    assert not torch.allclose(ds.batch(list(range(n)))["audio"], whole)  # a new epoch, new draws


def test_offscreen_sound_is_another_instrument(tiny_world):
    ds = SoloPairs(tiny_world, "train", image_size=64, train=True, masks=False,
                   audio_augment=AudioAugment(offscreen_prob=1.0), seed=0)
    plain = SoloPairs(tiny_world, "train", image_size=64, train=True, masks=False, seed=0)
    index = torch.arange(len(ds))
    u = noise_draws(0, 0, index)
    added = ds.batch(index.tolist())["audio"] - plain.batch(index.tolist())["audio"]
    heard = added.abs().amax(1) > 0
    assert heard.any() and bool((u[heard, OFF_ON] < 1.0).all())
    other = ds.rows[(u[:, OFF_CLIP] * len(ds)).long().clamp(max=len(ds) - 1)]
    same = ds.data.label[other] == ds.data.label[ds.rows]
    assert not bool((heard & same).any())  # never the instrument in view


def test_switches_are_checked_and_off_by_default(tiny_world):
    with pytest.raises(ConfigError, match="noise_prob"):
        AudioAugment(noise_prob=1.5)
    with pytest.raises(ConfigError, match="offscreen_prob"):
        StageOneConfig(offscreen_aug=-0.1).validate()
    with pytest.raises(ConfigError, match="noise_prob"):
        PeerConfig(noise_aug=2.0).validate()
    for bad in ((30.0, 10.0), (0.0, float("inf")), (5.0,)):
        with pytest.raises(ConfigError, match="noise_snr_db"):
            StageOneConfig(noise_aug=0.5, noise_snr_db=bad).validate()
    with pytest.raises(ConfigError, match="noise_snr_db"):
        PeerConfig(noise_snr_db=(20.0, 0.0)).validate()
    assert not AudioAugment().active
    # runs made before the switches existed keep their fingerprint
    for cfg in (StageOneConfig(), PEER_PRESETS["quick"]):
        assert "noise_aug" not in cfg.fingerprint(tiny_world) and "offscreen_aug" not in cfg.fingerprint(tiny_world)
        assert "noise_aug" in dataclasses.replace(cfg, noise_aug=0.5).fingerprint(tiny_world)
        assert "noise_snr_db" not in cfg.fingerprint(tiny_world)
        assert "noise_snr_db" in dataclasses.replace(cfg, noise_snr_db=(10.0, 30.0)).fingerprint(tiny_world)
