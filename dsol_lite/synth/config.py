"""Configuration of the synthetic world: presets and difficulty knobs.

Notebook: 00_setup_and_data.

Scene kinds:

* ``solo``: one sounding object; a silent distractor of another class in a given fraction.
* ``duet``: two sounding objects of different classes, their audio mixed.
* ``cocktail``: two sounding objects plus one or more silent ones.
* ``grid2x2``: DSOL's recipe: four solo frames tiled at half size, two of the four audios mixed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field

from dsol_lite.errors import ConfigError, check_settings
from dsol_lite.synth.classes import MAX_CLASSES

KINDS = ("solo", "duet", "cocktail", "grid2x2")
SPLITS = ("train", "val", "test")
#: Per-object coverage (mask area / image area) allowed for native scenes.
COVERAGE_LIMITS = (0.02, 0.15)


@dataclass(frozen=True)
class WorldConfig:
    """Everything that determines a generated world; same config + seed -> identical files."""

    name: str = "quick"
    seed: int = 0
    num_classes: int = 8
    image_size: int = 160
    clip_seconds: float = 2.0
    sample_rate: int = 16000
    #: scenes per kind and split, e.g. {"solo": (train, val, test)}
    counts: dict[str, tuple[int, int, int]] = field(default_factory=lambda: {
        "solo": (2000, 200, 200), "duet": (200, 50, 50),
        "cocktail": (300, 100, 100), "grid2x2": (400, 50, 50)})
    solo_distractor_fraction: float = 0.5  # solo scenes with silent distractors
    solo_max_distractors: int = 1
    cocktail_silent: tuple[int, int] = (1, 2)  # min, max silent objects in cocktail scenes
    coverage: tuple[float, float] = (0.03, 0.15)  # object mask area / image area
    clutter: int = 6  # background shapes that belong to no class
    noise_snr_db: float | None = None  # background noise; None = silent background
    offscreen_prob: float = 0.0  # chance of an extra sound from an object not in view
    silent: bool = False  # no object sounds: every object silent, no melody (a robustness test set)
    jpeg_quality: int = 92

    def validate(self) -> "WorldConfig":
        """Raise ConfigError naming the parameter when the configuration is impossible."""
        check_settings(self, at_least={"seed": 0, "clutter": 0, "solo_max_distractors": 0, "jpeg_quality": 1})
        if self.noise_snr_db is not None and not math.isfinite(self.noise_snr_db):
            raise ConfigError(f"noise_snr_db={self.noise_snr_db}: a finite SNR in dB, or None for no noise")
        if not 2 <= self.num_classes <= MAX_CLASSES:
            raise ConfigError(f"num_classes={self.num_classes}: the world has 2 to {MAX_CLASSES} classes")
        if self.image_size < 32 or self.image_size % 2:
            raise ConfigError(f"image_size={self.image_size}: must be an even number >= 32")
        if self.sample_rate != 16000:
            raise ConfigError(f"sample_rate={self.sample_rate}: the world is made at 16000 Hz")
        if self.clip_seconds < 1.0:
            raise ConfigError(f"clip_seconds={self.clip_seconds}: clips must be at least 1 s (the audio window)")
        unknown = set(self.counts) - set(KINDS)
        if unknown:
            raise ConfigError(f"counts: unknown scene kind(s) {sorted(unknown)}; kinds are {KINDS}")
        for kind, split_counts in self.counts.items():
            if len(split_counts) != 3 or any(int(c) != c or c < 0 for c in split_counts):
                raise ConfigError(f"counts[{kind!r}]={split_counts}: give three counts >= 0 (train, val, test)")
        lo, hi = self.coverage
        if not COVERAGE_LIMITS[0] <= lo <= hi <= COVERAGE_LIMITS[1]:
            raise ConfigError(f"coverage={self.coverage}: need {COVERAGE_LIMITS[0]} <= min <= max <= "
                              f"{COVERAGE_LIMITS[1]} (fraction of the image one object covers)")
        if not 0.0 <= self.solo_distractor_fraction <= 1.0:
            raise ConfigError(f"solo_distractor_fraction={self.solo_distractor_fraction}: must be in [0, 1]")
        if not 0.0 <= self.offscreen_prob <= 1.0:
            raise ConfigError(f"offscreen_prob={self.offscreen_prob}: must be in [0, 1]")
        smin, smax = self.cocktail_silent
        if not 1 <= smin <= smax:
            raise ConfigError(f"cocktail_silent={self.cocktail_silent}: need 1 <= min <= max")
        offscreen = 1 if self.offscreen_prob > 0 else 0
        # every object and off-screen source in a scene has its own class
        needs = {"solo": 1 + self.solo_max_distractors, "duet": 2, "cocktail": 2 + smax, "grid2x2": 4}
        for kind, n_objects in needs.items():
            if sum(self.counts.get(kind, (0, 0, 0))) and n_objects + offscreen > self.num_classes:
                param = {"solo": "solo_max_distractors", "cocktail": "cocktail_silent"}.get(kind, "num_classes")
                raise ConfigError(
                    f"{param}: {kind} scenes need {n_objects + offscreen} distinct classes "
                    f"({n_objects} objects{' + 1 off-screen source' if offscreen else ''}) but num_classes="
                    f"{self.num_classes}")
            if kind != "grid2x2" and n_objects * lo > 0.4:  # crowded scenes shrink objects down to `lo`
                raise ConfigError(f"coverage={self.coverage}: {n_objects} objects of at least {lo:.0%} each "
                                  f"cannot be placed without overlap; lower the minimum coverage or the object count")
        if self.noise_snr_db is not None and not -10 <= self.noise_snr_db <= 60:
            raise ConfigError(f"noise_snr_db={self.noise_snr_db}: use a value in [-10, 60] dB or None")
        if self.silent and self.noise_snr_db is not None:
            raise ConfigError(f"silent=True with noise_snr_db={self.noise_snr_db}: the noise level is set relative "
                              f"to the objects' sound, and in a silent world no object sounds")
        return self

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["counts"] = {k: list(v) for k, v in sorted(self.counts.items())}
        d["coverage"] = list(self.coverage)
        d["cocktail_silent"] = list(self.cocktail_silent)
        if not self.silent:  # left out while off: worlds made before the option keep their fingerprint
            d.pop("silent")
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "WorldConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ConfigError(f"unknown world parameter(s) {sorted(unknown)}")
        d = dict(d)
        if "counts" in d:
            d["counts"] = {k: tuple(v) for k, v in d["counts"].items()}
        for key in ("coverage", "cocktail_silent"):
            if key in d:
                d[key] = tuple(d[key])
        return cls(**d)

    def fingerprint(self) -> str:
        """A short hash of the configuration, stored with the world to recognise it."""
        blob = json.dumps(self.to_dict(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def total_scenes(self) -> int:
        return sum(sum(c) for c in self.counts.values())


PRESETS: dict[str, WorldConfig] = {
    # the committed data_samples/ world: a few scenes of every kind
    "sample": WorldConfig(name="sample", seed=7, counts={
        "solo": (8, 2, 6), "duet": (2, 0, 2), "cocktail": (2, 0, 3), "grid2x2": (2, 0, 2)}),
    # small enough for unit tests
    "tiny": WorldConfig(name="tiny", seed=1, counts={
        "solo": (48, 8, 8), "duet": (8, 2, 2), "cocktail": (8, 2, 4), "grid2x2": (8, 2, 2)}),
    # every stage trains on a laptop CPU in minutes
    "quick": WorldConfig(name="quick"),
    # GPU training at DSOL's resolution (resize 256, crop 224)
    "full": WorldConfig(name="full", image_size=256, counts={
        "solo": (8000, 500, 1000), "duet": (1000, 200, 400),
        "cocktail": (2000, 300, 500), "grid2x2": (4000, 300, 500)}),
}


def preset(name: str, **overrides) -> WorldConfig:
    """A preset world configuration, optionally with knobs overridden, validated."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return dataclasses.replace(PRESETS[name], **overrides).validate()
