"""Audio: reading clips safely and DSOL's log-mel front end.

Notebook: 00_setup_and_data.

Reading uses soundfile (torchaudio.load needs torchcodec). Stereo is averaged to mono; another
sample rate is resampled with torchaudio, or refused when ``resample=False``.

The front end follows DSOL: 16 kHz, 1-s windows, STFT with n_fft 160 and hop 80, 64 mel bands
up to 8 kHz, in dB, giving a 201 x 64 (time x mel) image per window. Note that with n_fft 160
the STFT has only 81 frequency bins (100 Hz apart), fewer than the lowest mel bands need: a few
low bands get no bin at all and stay at the dB floor. We keep DSOL's numbers as the default and
report the empty bands (``LogMel.empty_bands``); a larger ``n_fft`` avoids them.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF
from torch import nn

from dsol_lite.errors import DataError


@dataclass(frozen=True)
class AudioConfig:
    sample_rate: int = 16000
    window_seconds: float = 1.0
    n_fft: int = 160
    hop_length: int = 80
    n_mels: int = 64
    f_min: float = 0.0
    f_max: float = 8000.0
    top_db: float | None = 80.0

    @property
    def window_samples(self) -> int:
        return int(round(self.window_seconds * self.sample_rate))

    @property
    def num_frames(self) -> int:
        return self.window_samples // self.hop_length + 1


def load_audio(path: str | Path, sample_rate: int = 16000, resample: bool = True) -> np.ndarray:
    """Mono float32 samples of an audio file at ``sample_rate``; clear errors for bad files."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "audio file is missing")
    try:
        data, rate = sf.read(path, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, ValueError) as err:
        raise DataError(path, f"cannot decode audio ({err})") from None
    if data.shape[0] == 0:
        raise DataError(path, "audio file holds no samples")
    wave = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    if not np.isfinite(wave).all():
        raise DataError(path, "audio contains NaN or infinite samples")
    if rate != sample_rate:
        if not resample:
            raise DataError(path, f"sample rate is {rate} Hz, expected {sample_rate} Hz")
        wave = AF.resample(torch.from_numpy(np.ascontiguousarray(wave)), rate, sample_rate).numpy()
    return np.ascontiguousarray(wave, dtype=np.float32)


def crop_window(wave: np.ndarray, sample_rate: int, center: float, seconds: float = 1.0,
                shift: float = 0.0) -> np.ndarray:
    """``seconds`` of audio centred on ``center + shift`` seconds, zero-padded past the ends."""
    n = int(round(seconds * sample_rate))
    start = int(round((center + shift) * sample_rate)) - n // 2
    start = min(max(start, 0), max(len(wave) - n, 0))
    out = wave[start:start + n]
    if len(out) < n:
        out = np.pad(out, (0, n - len(out)))
    return out


class LogMel(nn.Module):
    """Waveforms ``(B, T)`` or ``(T,)`` -> log-mel images ``(B, 1, frames, n_mels)`` in dB.

    Batched and device-agnostic: move it with ``.to(device)`` like any module.
    """

    def __init__(self, cfg: AudioConfig = AudioConfig()) -> None:
        super().__init__()
        self.cfg = cfg
        with warnings.catch_warnings():  # torchaudio warns about the empty bands we report instead
            warnings.simplefilter("ignore", UserWarning)
            fbank = AF.melscale_fbanks(cfg.n_fft // 2 + 1, cfg.f_min, cfg.f_max, cfg.n_mels, cfg.sample_rate)
        self.register_buffer("fbank", fbank, persistent=False)  # (freq, mel)
        self.register_buffer("window", torch.hann_window(cfg.n_fft), persistent=False)
        self.empty_bands = int((fbank.sum(0) == 0).sum())

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        squeeze = wave.dim() == 1
        wave = wave.reshape(1, -1) if squeeze else wave
        spec = torch.stft(wave.float(), self.cfg.n_fft, self.cfg.hop_length, window=self.window,
                          center=True, return_complex=True).abs().pow(2)  # (B, freq, frames)
        mel = torch.matmul(spec.transpose(1, 2), self.fbank)  # (B, frames, mel)
        db = 10.0 * torch.log10(mel.clamp_min(1e-10))
        if self.cfg.top_db is not None:
            db = torch.maximum(db, db.amax(dim=(1, 2), keepdim=True) - self.cfg.top_db)
        out = db.unsqueeze(1)
        return out[0] if squeeze else out


def time_shift(wave: torch.Tensor, max_fraction: float = 0.5) -> torch.Tensor:
    """A circularly time-shifted view of each waveform of ``(B, T)`` (cross-modal alignment's audio
    augmentation, notebook 06); shifts up to ``max_fraction`` of the length, from torch's RNG."""
    n = wave.shape[-1]
    limit = int(n * max_fraction)
    shifts = torch.randint(-limit, limit + 1, (wave.shape[0],)).tolist()
    return torch.stack([torch.roll(w, s, dims=-1) for w, s in zip(wave, shifts)])
