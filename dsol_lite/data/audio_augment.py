"""Training-time audio augmentation: background noise and off-screen sound (off by default).

Notebook: 06_method_comparison (robustness).

A method trained on clean clips has only ever heard its objects; at test time background noise
or an instrument outside the frame changes the audio embedding and the map with it. This switch
lets training hear both:

* **noise** (``noise_prob`` of the items): coloured Gaussian-like noise, its spectrum falling as
  ``f ** -slope`` with a slope drawn in [0, 1] (white to pink), added at an SNR drawn uniformly in
  ``SNR_RANGE_DB`` relative to the item's own window;
* **off-screen sound** (``offscreen_prob`` of the items): the audio of another training clip
  whose instrument is not the one in view, at a level drawn in ``OFFSCREEN_RANGE_DB`` relative to
  the item's sound (items whose drawn clip has the same instrument stay as they are).

The robustness test sets (``synth.variants``) add pinkish noise and an off-screen instrument of
the same kinds, so this measures matched-condition training: a noise type training never heard
is a different question. Like the picture augmentation, every draw is a pure function of
``(seed, epoch, item index)`` (``data.augment.item_uniforms``), made for a whole batch at once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from dsol_lite.data.augment import DRAWS, item_uniforms
from dsol_lite.errors import ConfigError

SNR_RANGE_DB = (0.0, 30.0)
OFFSCREEN_RANGE_DB = (-6.0, 3.0)
NOISE_ON, SNR, SLOPE, OFF_ON, OFF_LEVEL, OFF_CLIP, OFF_TIME = range(7)  # draws after the picture's
AUDIO_DRAWS = OFF_TIME + 1
_PHASES = DRAWS + AUDIO_DRAWS  # the first draw of the noise's random phases


@dataclass(frozen=True)
class AudioAugment:
    """Which fraction of training items hears noise (at an SNR drawn in ``snr_db``) and which an
    off-screen instrument."""

    noise_prob: float = 0.0
    offscreen_prob: float = 0.0
    snr_db: tuple[float, float] = SNR_RANGE_DB

    def __post_init__(self) -> None:
        for name in ("noise_prob", "offscreen_prob"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and 0 <= value <= 1):
                raise ConfigError(f"{name}={value!r}: a fraction of the training items, in [0, 1]")
        snr = self.snr_db
        if (not isinstance(snr, (tuple, list)) or len(snr) != 2
                or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in snr) or snr[0] > snr[1]):
            raise ConfigError(f"noise_snr_db={snr!r}: the (lowest, highest) SNR in dB of the training noise, "
                              f"two finite numbers, lowest first")

    @property
    def active(self) -> bool:
        return self.noise_prob > 0 or self.offscreen_prob > 0


def rms(wave: torch.Tensor) -> torch.Tensor:
    """Root mean square of each row of ``(B, T)``, ``(B, 1)``."""
    return wave.pow(2).mean(-1, keepdim=True).sqrt()


def coloured_noise(phases: torch.Tensor, slope: torch.Tensor, samples: int) -> torch.Tensor:
    """``(B, samples)`` noise of RMS 1 whose power falls as ``f ** -slope`` (0 white, 1 pink):
    a random-phase spectrum (``phases`` ``(B, samples // 2 + 1)`` uniforms in (0, 1)), inverted."""
    bins = torch.arange(samples // 2 + 1, device=phases.device, dtype=torch.float64)
    magnitude = bins.clamp(min=1.0)[None, :].pow(-slope.double()[:, None] / 2)
    magnitude[:, 0] = 0.0  # no constant offset
    spectrum = torch.polar(magnitude, 2 * math.pi * phases.double())
    wave = torch.fft.irfft(spectrum, samples)
    return (wave / rms(wave).clamp_min(1e-12)).float()


def scale_to(wave: torch.Tensor, reference: torch.Tensor, level_db: torch.Tensor) -> torch.Tensor:
    """``wave`` rescaled to ``level_db`` (``(B,)``) relative to the RMS of ``reference``, row by row."""
    gain = rms(reference) / rms(wave).clamp_min(1e-12) * torch.pow(10.0, level_db[:, None] / 20)
    return wave * gain.to(wave.dtype)


def noise_draws(seed: int, epoch: int, index: torch.Tensor) -> torch.Tensor:
    """The uniforms that drive an item's audio augmentation (``NOISE_ON`` ... ``OFF_TIME``)."""
    return item_uniforms(seed, epoch, index, AUDIO_DRAWS, first=DRAWS)


def add_noise(audio: torch.Tensor, u: torch.Tensor, prob: float, seed: int, epoch: int,
              index: torch.Tensor, snr_db: tuple[float, float] = SNR_RANGE_DB) -> torch.Tensor:
    """``audio`` ``(B, T)`` with noise added to the items whose draw ``u[:, NOISE_ON]`` is below
    ``prob``, at an SNR drawn uniformly in ``snr_db``."""
    on = u[:, NOISE_ON] < prob
    if not bool(on.any()):
        return audio
    samples = audio.shape[-1]
    phases = item_uniforms(seed, epoch, index[on], samples // 2 + 1, first=_PHASES)
    noise = coloured_noise(phases, u[on, SLOPE], samples)
    snr = snr_db[0] + (snr_db[1] - snr_db[0]) * u[on, SNR]
    out = audio.clone()
    out[on] = audio[on] + scale_to(noise, audio[on], -snr)
    return out


def add_offscreen(audio: torch.Tensor, partner: torch.Tensor, on: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """``audio`` plus each ``on`` item's ``partner`` window, at a level in ``OFFSCREEN_RANGE_DB``."""
    if not bool(on.any()):
        return audio
    lo, hi = OFFSCREEN_RANGE_DB
    level = lo + (hi - lo) * u[on, OFF_LEVEL]
    out = audio.clone()
    out[on] = audio[on] + scale_to(partner[on], audio[on], level)
    return out


__all__ = ["AudioAugment", "SNR_RANGE_DB", "OFFSCREEN_RANGE_DB", "rms", "coloured_noise", "scale_to",
           "noise_draws", "add_noise", "add_offscreen"]
