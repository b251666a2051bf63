"""The instrument classes of the synthetic world: how each one looks and how it sounds.

Notebook: 00_setup_and_data.

A class is a shape (``shapes.SHAPES``), a palette of two HSV colours and a timbre. The timbre
families follow how real instruments make sound: a plucked or struck string decays, a bowed
string or a wind instrument sustains, brass is bright, a struck bar has inharmonic partials.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Timbre:
    """How a class sounds. Pitches are MIDI note numbers (69 = A4 = 440 Hz)."""

    family: str  # plucked | bowed | blown | brass | struck | drum
    midi_range: tuple[int, int]
    harmonic_slope: float  # amplitude of harmonic n is n ** -slope
    even_weight: float = 1.0  # < 1 weakens even harmonics (clarinet-like)
    partials: tuple[float, ...] | None = None  # inharmonic frequency ratios (struck bars)
    attack: float = 0.01  # seconds
    decay: float = 0.0  # exponential decay time in seconds; 0 = sustained
    vibrato_rate: float = 0.0  # Hz
    vibrato_depth: float = 0.0  # semitones
    noise: float = 0.0  # breath / bow / stick noise, relative level
    max_harmonics: int = 16


@dataclass(frozen=True)
class InstrumentClass:
    name: str
    primary_hsv: tuple[float, float, float]
    secondary_hsv: tuple[float, float, float]
    timbre: Timbre
    max_rotation_deg: float = 20.0


CLASSES: tuple[InstrumentClass, ...] = (
    InstrumentClass("guitar", (0.07, 0.75, 0.85), (0.06, 0.8, 0.35),
                    Timbre("plucked", (45, 69), 1.3, attack=0.004, decay=0.45)),
    InstrumentClass("violin", (0.99, 0.85, 0.7), (0.0, 0.6, 0.2),
                    Timbre("bowed", (62, 86), 1.0, attack=0.06, vibrato_rate=6.0, vibrato_depth=0.3, noise=0.02)),
    InstrumentClass("flute", (0.57, 0.3, 0.95), (0.62, 0.55, 0.5),
                    Timbre("blown", (72, 93), 3.0, attack=0.08, vibrato_rate=5.0, vibrato_depth=0.15, noise=0.08,
                           max_harmonics=5), max_rotation_deg=60.0),
    InstrumentClass("trumpet", (0.14, 0.9, 0.95), (0.11, 0.9, 0.55),
                    Timbre("brass", (55, 77), 0.7, attack=0.03)),
    InstrumentClass("xylophone", (0.83, 0.7, 0.9), (1.45, 0.8, 0.85),
                    Timbre("struck", (72, 96), 0.0, partials=(1.0, 3.93, 9.2), attack=0.002, decay=0.25, noise=0.05)),
    InstrumentClass("drum", (0.63, 0.85, 0.75), (0.6, 0.05, 0.97),
                    Timbre("drum", (36, 50), 0.0, attack=0.002, decay=0.16, noise=0.35)),
    InstrumentClass("cello", (0.78, 0.6, 0.6), (0.8, 0.4, 0.25),
                    Timbre("bowed", (36, 60), 0.8, attack=0.1, vibrato_rate=5.0, vibrato_depth=0.25, noise=0.02)),
    InstrumentClass("clarinet", (0.0, 0.0, 0.12), (0.6, 0.1, 0.8),
                    Timbre("blown", (50, 74), 1.0, even_weight=0.1, attack=0.05, noise=0.03),
                    max_rotation_deg=60.0),
    InstrumentClass("harp", (0.33, 0.75, 0.6), (0.15, 0.8, 0.95),
                    Timbre("plucked", (60, 88), 2.2, attack=0.003, decay=0.9)),
    InstrumentClass("tuba", (0.47, 0.7, 0.65), (0.5, 0.8, 0.25),
                    Timbre("brass", (28, 48), 0.9, attack=0.07)),
)

CLASS_NAMES: tuple[str, ...] = tuple(c.name for c in CLASSES)
MAX_CLASSES = len(CLASSES)


def class_by_name(name: str) -> InstrumentClass:
    for cls in CLASSES:
        if cls.name == name:
            return cls
    raise KeyError(f"unknown class {name!r}; the world has {', '.join(CLASS_NAMES)}")
