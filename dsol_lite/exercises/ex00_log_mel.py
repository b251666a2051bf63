"""Exercise of notebook 00_setup_and_data: compute DSOL's log-mel spectrogram by hand.

``log_mel_by_hand`` is the reference solution; ``check_log_mel`` checks any attempt against the
library's ``LogMel`` module.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from dsol_lite.data.audio import AudioConfig, LogMel


def hz_to_mel(f: torch.Tensor) -> torch.Tensor:
    """HTK mel scale: 2595 log10(1 + f / 700)."""
    return 2595.0 * torch.log10(1.0 + f / 700.0)


def mel_to_hz(m: torch.Tensor) -> torch.Tensor:
    return 700.0 * (10.0 ** (m / 2595.0) - 1.0)


def mel_filterbank(cfg: AudioConfig = AudioConfig()) -> torch.Tensor:
    """Triangular filters, equally spaced on the mel scale: a (n_fft // 2 + 1, n_mels) matrix."""
    freqs = torch.linspace(0, cfg.sample_rate / 2, cfg.n_fft // 2 + 1)
    edges = mel_to_hz(torch.linspace(hz_to_mel(torch.tensor(cfg.f_min)), hz_to_mel(torch.tensor(cfg.f_max)),
                                     cfg.n_mels + 2))
    left, centre, right = edges[:-2], edges[1:-1], edges[2:]
    rising = (freqs[:, None] - left) / (centre - left)
    falling = (right - freqs[:, None]) / (right - centre)
    return torch.clamp(torch.minimum(rising, falling), min=0.0)


def log_mel_by_hand(wave: torch.Tensor, cfg: AudioConfig = AudioConfig()) -> torch.Tensor:
    """Solution: (T,) waveform -> (1, frames, n_mels) log-mel in dB, like ``LogMel``.

    1. power spectrogram |STFT|^2 with a Hann window (centred frames);
    2. project the frequency axis onto the mel filterbank;
    3. 10 log10, floored at (max - top_db).
    """
    window = torch.hann_window(cfg.n_fft)
    spec = torch.stft(wave, cfg.n_fft, cfg.hop_length, window=window, center=True, return_complex=True)
    power = spec.abs() ** 2  # (freq, frames)
    mel = power.T @ mel_filterbank(cfg)  # (frames, mel)
    db = 10.0 * torch.log10(mel.clamp_min(1e-10))
    if cfg.top_db is not None:
        db = torch.maximum(db, db.max() - cfg.top_db)
    return db.unsqueeze(0)


def check_log_mel(fn: Callable[[torch.Tensor], torch.Tensor]) -> str:
    """Compare ``fn`` with the library on a test chord; raise AssertionError saying what is off."""
    cfg = AudioConfig()
    t = torch.arange(cfg.window_samples) / cfg.sample_rate
    wave = sum(0.2 * torch.sin(2 * math.pi * f * t) for f in (220.0, 554.4, 1318.5)) + 0.01 * torch.randn(
        cfg.window_samples, generator=torch.Generator().manual_seed(0))
    expected = LogMel(cfg)(wave)
    got = fn(wave)
    if not isinstance(got, torch.Tensor):
        raise AssertionError(f"return a torch.Tensor, got {type(got).__name__}")
    if got.shape != expected.shape:
        raise AssertionError(f"shape {tuple(got.shape)}, expected {tuple(expected.shape)} (1, frames, mel bands)")
    err = (got - expected).abs().max().item()
    if err > 1e-3:
        raise AssertionError(f"values differ from the library by up to {err:.3g} dB; check the window, "
                             f"the power (|X|^2) and the dB floor")
    return f"correct: shape {tuple(got.shape)}, within 1e-3 dB of dsol_lite.data.audio.LogMel"
