"""Scenes of the synthetic world: which objects are where, which of them sound, the mixture.

Notebook: 00_setup_and_data.

A scene is made in three independent random streams, all derived from
``(seed, kind, split, index)``: the *plan* (classes, sounding flags), the *picture* and the
*sounds*. Each source's sound is seeded by its class, so adding or removing a silent object
changes nothing in the audio: silent objects contribute no sound by construction.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from dsol_lite.errors import ConfigError
from dsol_lite.synth.classes import CLASSES
from dsol_lite.synth.config import KINDS, SPLITS, WorldConfig
from dsol_lite.synth.sounds import background_noise, synth_melody
from dsol_lite.synth.visuals import mark_occupied, place, render_background, sample_instance, paste

CROWD_BUDGET = 0.4  # most of the image all objects of a scene may cover together
_STREAM_PLAN, _STREAM_PICTURE, _STREAM_SOUND, _STREAM_NOISE, _STREAM_GAIN, _STREAM_DISTRACT = range(6)


@dataclass
class SceneObject:
    class_id: int
    box: tuple[int, int, int, int]  # x1, y1, x2, y2 in pixels, half-open: x1 <= x < x2
    sounding: bool
    mask_value: int  # value of this object's pixels in ``Scene.labels``


@dataclass
class Source:
    class_id: int | None  # None for background noise
    on_screen: bool
    waveform: np.ndarray  # float32, already scaled as it is in the mixture


@dataclass
class ScenePlan:
    kind: str
    classes: list[int]  # visible objects (grid2x2: one per tile, in reading order)
    sounding: list[bool]
    offscreen: int | None = None  # class of a sound whose object is not in view
    noise_snr_db: float | None = None


@dataclass
class Scene:
    plan: ScenePlan
    image: np.ndarray  # H x W x 3 uint8
    labels: np.ndarray  # H x W uint8: 0 = background, k = object with mask_value k
    objects: list[SceneObject]
    sources: list[Source] = field(default_factory=list)
    mixture: np.ndarray | None = None  # float32, the sum of the sources

    @property
    def sounding_classes(self) -> list[int]:
        return [o.class_id for o in self.objects if o.sounding]


def _rng(cfg: WorldConfig, kind: str, split: str, index: int, stream: int, extra: int = 0) -> np.random.Generator:
    return np.random.default_rng([cfg.seed, KINDS.index(kind), SPLITS.index(split), index, stream, extra])


def plan_scene(cfg: WorldConfig, kind: str, split: str, index: int) -> ScenePlan:
    """Sample which classes appear and which of them sound."""
    if kind not in KINDS:
        raise ConfigError(f"kind={kind!r}: scene kinds are {KINDS}")
    rng = _rng(cfg, kind, split, index, _STREAM_PLAN)
    if kind == "solo":
        n_split = cfg.counts["solo"][SPLITS.index(split)]
        order = _rng(cfg, kind, split, 0, _STREAM_DISTRACT).permutation(max(n_split, index + 1))
        with_distractor = order[index] < math.ceil(cfg.solo_distractor_fraction * n_split)
        n_silent = int(rng.integers(1, cfg.solo_max_distractors + 1)) if with_distractor else 0
        n_sounding = 1
    elif kind == "duet":
        n_sounding, n_silent = 2, 0
    elif kind == "cocktail":
        n_sounding, n_silent = 2, int(rng.integers(cfg.cocktail_silent[0], cfg.cocktail_silent[1] + 1))
    else:
        n_sounding, n_silent = 2, 2
    n = n_sounding + n_silent
    classes = [int(c) for c in rng.permutation(cfg.num_classes)[: n + 1]]
    offscreen = classes.pop() if rng.random() < cfg.offscreen_prob else None
    classes = classes[:n]
    sounding = [True] * n_sounding + [False] * n_silent
    if kind == "grid2x2":  # the two sounding tiles may be any two of the four
        sounding = [bool(s) for s in rng.permutation(sounding)]
    if cfg.silent:  # the same scene with every object silent (the draws above are unchanged)
        sounding = [False] * n
    return ScenePlan(kind, classes, sounding, offscreen, cfg.noise_snr_db)


def render_picture(cfg: WorldConfig, plan: ScenePlan, rng: np.random.Generator,
                   size: int | None = None) -> tuple[np.ndarray, np.ndarray, list[SceneObject]]:
    """Background plus non-overlapping objects; returns float image, label map and objects.

    Crowded scenes get smaller objects: each object's maximum coverage is capped so that all of
    them together take at most ``CROWD_BUDGET`` of the image, and if an object still finds no
    free spot, the placement restarts with a smaller maximum (never below ``cfg.coverage[0]``).
    """
    size = size or cfg.image_size
    background = render_background(size, cfg.clutter, rng)
    lo, hi = cfg.coverage
    hi = max(lo, min(hi, CROWD_BUDGET / len(plan.classes)))
    while True:
        placed = _place_objects(background, plan, (lo, hi), rng)
        if placed is not None:
            image, labels, objects = placed
            break
        if hi <= lo:
            raise ConfigError(f"coverage={cfg.coverage}: could not place {len(plan.classes)} objects "
                              f"in a {size} px image; lower the coverage or the number of objects")
        hi = max(lo, hi * 0.75)
    image = image + rng.normal(0, 0.012, image.shape)  # sensor noise
    return image, labels, objects


def _place_objects(background: np.ndarray, plan: ScenePlan, coverage: tuple[float, float],
                   rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, list[SceneObject]] | None:
    size = background.shape[0]
    image = background.copy()
    labels = np.zeros((size, size), np.uint8)
    occupied = np.zeros((size, size), bool)
    objects = []
    for k, (class_id, sounding) in enumerate(zip(plan.classes, plan.sounding), start=1):
        mask, rgb = sample_instance(CLASSES[class_id], size, coverage, rng)
        spot = place(mask, occupied, rng)
        if spot is None:
            return None
        x, y = spot
        paste(image, mask, rgb, x, y, labels, k)
        mark_occupied(occupied, mask, x, y)
        h, w = mask.shape
        objects.append(SceneObject(class_id, (x, y, x + w, y + h), sounding, k))
    return image, labels, objects


def to_uint8(image: np.ndarray) -> np.ndarray:
    return np.clip(np.round(image * 255), 0, 255).astype(np.uint8)


def tile_2x2(tiles: list[tuple[np.ndarray, np.ndarray, list[SceneObject]]]
             ) -> tuple[np.ndarray, np.ndarray, list[SceneObject]]:
    """DSOL's 2x2 recipe: four frames, each halved, tiled in reading order.

    Images are halved by 2x2 averaging; label maps by taking each 2x2 block's object (objects
    are at least GAP pixels apart, so a block never holds two). Boxes are recomputed as the
    tight boxes of the halved masks, shifted into their quadrant, so they stay exact.
    """
    size = tiles[0][0].shape[0]
    half = size // 2
    image = np.zeros((size, size, 3), tiles[0][0].dtype)
    labels = np.zeros((size, size), np.uint8)
    objects: list[SceneObject] = []
    for q, (img, lab, objs) in enumerate(tiles):
        oy, ox = (q // 2) * half, (q % 2) * half
        image[oy:oy + half, ox:ox + half] = img.reshape(half, 2, half, 2, -1).mean((1, 3))
        small = lab.reshape(half, 2, half, 2).max((1, 3))
        for obj in objs:
            value = len(objects) + 1
            ys, xs = np.nonzero(small == obj.mask_value)
            labels[oy + ys, ox + xs] = value
            box = (ox + int(xs.min()), oy + int(ys.min()), ox + int(xs.max()) + 1, oy + int(ys.max()) + 1)
            objects.append(SceneObject(obj.class_id, box, obj.sounding, value))
    return image, labels, objects


def render_sources(cfg: WorldConfig, plan: ScenePlan, split: str, index: int) -> list[Source]:
    """The sounding objects' melodies (plus off-screen sound and noise), mixed levels, float32."""
    n = int(round(cfg.clip_seconds * cfg.sample_rate))
    voices = [(c, True) for c, s in zip(plan.classes, plan.sounding) if s]
    if plan.offscreen is not None:
        voices.append((plan.offscreen, False))
    sources = []
    for class_id, on_screen in voices:
        wave = synth_melody(CLASSES[class_id].timbre, cfg.clip_seconds, cfg.sample_rate,
                            _rng(cfg, plan.kind, split, index, _STREAM_SOUND, class_id))
        gain_db = _rng(cfg, plan.kind, split, index, _STREAM_GAIN, class_id).uniform(-3, 3)
        sources.append(Source(class_id, on_screen, wave[:n] * np.float32(10 ** (gain_db / 20))))
    if plan.noise_snr_db is not None:
        signal_rms = float(np.sqrt(np.mean(np.sum([s.waveform for s in sources], 0) ** 2)))
        noise = background_noise(n, _rng(cfg, plan.kind, split, index, _STREAM_NOISE))
        sources.append(Source(None, False, noise * np.float32(signal_rms * 10 ** (-plan.noise_snr_db / 20))))
    return sources


def mix(sources: list[Source], length: int, peak: float = 0.9) -> np.ndarray:
    """Sum the sources (``length`` zeros when there are none); if the sum would clip, scale every
    source down by the same factor."""
    if not sources:
        return np.zeros(length, dtype=np.float32)
    mixture = np.sum([s.waveform for s in sources], 0, dtype=np.float32)
    top = float(np.abs(mixture).max())
    if top > peak:
        for s in sources:
            s.waveform = s.waveform * np.float32(peak / top)
        mixture = np.sum([s.waveform for s in sources], 0, dtype=np.float32)
    return mixture


def make_scene(cfg: WorldConfig, kind: str, split: str, index: int, plan: ScenePlan | None = None) -> Scene:
    """Generate one scene, fully determined by ``(cfg, kind, split, index)`` (and ``plan``)."""
    plan = plan or plan_scene(cfg, kind, split, index)
    rng = _rng(cfg, kind, split, index, _STREAM_PICTURE)
    if kind == "grid2x2":
        tiles = [render_picture(cfg, ScenePlan("solo", [c], [s]), rng) for c, s in zip(plan.classes, plan.sounding)]
        image, labels, objects = tile_2x2(tiles)
    else:
        image, labels, objects = render_picture(cfg, plan, rng)
    sources = render_sources(cfg, plan, split, index)
    mixture = mix(sources, int(round(cfg.clip_seconds * cfg.sample_rate)))
    return Scene(plan, to_uint8(image), labels, objects, sources, mixture)
