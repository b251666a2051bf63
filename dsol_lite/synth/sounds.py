"""Sounds of the synthetic world: short random melodies played by each class's timbre.

Notebook: 00_setup_and_data.

Additive synthesis: a note is a sum of (in)harmonic partials, each with an amplitude set by the
timbre's spectral slope, shaped by an envelope (attack, then sustain or exponential decay), with
optional vibrato and a noise component. Every instance jitters its timbre a little, so two
violins never sound exactly alike.
"""

from __future__ import annotations

import numpy as np
from scipy.signal import lfilter

from dsol_lite.synth.classes import Timbre

PENTATONIC = (0, 2, 4, 7, 9)
NOTE_LENGTHS = (0.125, 0.25, 0.25, 0.375, 0.5)  # seconds at tempo factor 1


def midi_to_hz(midi: np.ndarray | float) -> np.ndarray | float:
    return 440.0 * 2.0 ** ((np.asarray(midi) - 69.0) / 12.0)


def random_melody(timbre: Timbre, seconds: float, rng: np.random.Generator) -> list[tuple[float, float, int]]:
    """A random pentatonic melody as ``(onset, duration, midi)`` triples covering ``seconds``."""
    low, high = timbre.midi_range
    root = int(rng.integers(low, max(low + 1, high - 11)))
    scale = [root + 12 * octave + step for octave in range(3) for step in PENTATONIC]
    scale = [m for m in scale if m <= high]
    tempo = rng.uniform(0.8, 1.25)
    position = int(rng.integers(len(scale)))
    notes, t = [], float(rng.uniform(0.0, 0.05))
    while t < seconds:
        duration = float(rng.choice(NOTE_LENGTHS)) * tempo
        notes.append((t, duration, scale[position]))
        position = int(np.clip(position + rng.integers(-2, 3), 0, len(scale) - 1))
        t += duration
    return notes


def jitter_timbre(timbre: Timbre, rng: np.random.Generator) -> dict:
    """Per-instance variation of a timbre (so instances of a class differ)."""
    return {
        "slope": timbre.harmonic_slope + rng.uniform(-0.15, 0.15),
        "decay": timbre.decay * rng.uniform(0.8, 1.25),
        "vibrato_rate": timbre.vibrato_rate * rng.uniform(0.9, 1.1),
        "noise": timbre.noise * rng.uniform(0.7, 1.3),
        "detune": rng.uniform(-0.15, 0.15),  # semitones
    }


def _envelope(timbre: Timbre, decay: float, n: int, sr: int, sustain_samples: int) -> np.ndarray:
    t = np.arange(n) / sr
    attack = np.clip(t / max(timbre.attack, 1e-4), 0.0, 1.0)
    if decay > 0:  # plucked, struck: ring out
        body = np.exp(-t / decay)
    else:  # sustained: hold, then release over the tail
        body = np.ones(n)
        tail = n - sustain_samples
        if tail > 0:
            body[sustain_samples:] = np.linspace(1.0, 0.0, tail)
    return attack * body


def synth_note(timbre: Timbre, params: dict, midi: float, seconds: float, sr: int,
               rng: np.random.Generator) -> np.ndarray:
    """One note (with a short release tail) as float64 samples."""
    release = 0.04
    n = int(round((seconds + release) * sr))
    sustain = int(round(seconds * sr))
    t = np.arange(n) / sr
    f0 = midi_to_hz(midi + params["detune"])
    if timbre.family == "drum":
        freq = f0 * (1.0 + 1.5 * np.exp(-t / 0.03))  # the pitch drop of a struck membrane
        phase = 2 * np.pi * np.cumsum(freq) / sr
        tone = np.sin(phase)
    else:
        vibrato = timbre.vibrato_depth * np.sin(2 * np.pi * params["vibrato_rate"] * t)  # semitones
        phase = 2 * np.pi * np.cumsum(f0 * 2.0 ** (vibrato / 12.0)) / sr
        if timbre.partials is not None:
            ratios = np.asarray(timbre.partials)
            amps = np.array([1.0, 0.3, 0.1])[: len(ratios)]
        else:
            count = int(min(timbre.max_harmonics, max(1, 7500 // f0)))
            ratios = np.arange(1, count + 1, dtype=float)
            amps = ratios ** -params["slope"]
            amps[1::2] *= timbre.even_weight
        keep = ratios * f0 < 7800  # stay below Nyquist at 16 kHz
        ratios, amps = ratios[keep], amps[keep]
        if params["decay"] > 0:  # higher partials die faster
            decays = np.exp(-t[None, :] * (ratios[:, None] - 1) * 0.5 / max(params["decay"], 1e-3))
        else:
            decays = 1.0
        tone = (amps[:, None] * decays * np.sin(ratios[:, None] * phase[None, :])).sum(0)
    if params["noise"] > 0:
        noise = rng.standard_normal(n)
        burst = np.exp(-t / 0.03) if timbre.family in ("struck", "drum") else 1.0
        tone = tone + params["noise"] * noise * burst * np.abs(tone).max()
    return tone * _envelope(timbre, params["decay"], n, sr, sustain)


def synth_melody(timbre: Timbre, seconds: float, sr: int, rng: np.random.Generator) -> np.ndarray:
    """A random melody of ``seconds`` length, RMS-normalised to 0.1, as float32."""
    params = jitter_timbre(timbre, rng)
    n_total = int(round(seconds * sr))
    out = np.zeros(n_total + sr, dtype=np.float64)
    for onset, duration, midi in random_melody(timbre, seconds, rng):
        note = synth_note(timbre, params, midi, duration, sr, rng)
        start = int(round(onset * sr))
        out[start:start + len(note)] += note
    out = out[:n_total]
    rms = np.sqrt(np.mean(out ** 2))
    return (out * (0.1 / max(rms, 1e-8))).astype(np.float32)


def background_noise(n: int, rng: np.random.Generator) -> np.ndarray:
    """Pinkish background noise (white noise plus its one-pole low-pass), RMS 1, float32."""
    white = rng.standard_normal(n)
    low = lfilter([0.05], [1.0, -0.95], white)  # y[t] = 0.95 y[t-1] + 0.05 x[t]
    noise = 0.5 * white + 4.0 * low
    return (noise / max(np.sqrt(np.mean(noise ** 2)), 1e-8)).astype(np.float32)
