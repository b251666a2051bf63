"""Pictures of the synthetic world: cluttered backgrounds and jittered instrument instances.

Notebook: 00_setup_and_data.

Images are float RGB in ``[0, 1]`` while drawing. Objects never overlap (a 2-pixel gap is kept),
so each object's mask is exactly the set of pixels it was drawn on and its box is the tight box
of that mask.
"""

from __future__ import annotations

import numpy as np

from dsol_lite.errors import ConfigError
from dsol_lite.synth.classes import InstrumentClass
from dsol_lite.synth.shapes import SHAPES, clutter_shape

GAP = 2  # pixels kept free around every object


def hsv_to_rgb(hsv: np.ndarray) -> np.ndarray:
    """Vectorised HSV -> RGB for arrays of shape (..., 3); hue wraps around 1."""
    h, s, v = (hsv[..., i] for i in range(3))
    h = (h % 1.0) * 6.0
    i = np.floor(h).astype(int) % 6
    f = h - np.floor(h)
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    choices = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)]
    rgb = np.zeros(hsv.shape)
    for k, (r, g, b) in enumerate(choices):
        sel = i == k
        rgb[..., 0] = np.where(sel, r, rgb[..., 0])
        rgb[..., 1] = np.where(sel, g, rgb[..., 1])
        rgb[..., 2] = np.where(sel, b, rgb[..., 2])
    return rgb


def _canvas_coords(size: int, angle_deg: float, flip: bool) -> tuple[np.ndarray, np.ndarray]:
    c = (np.arange(size) + 0.5) / size * 2.0 - 1.0
    x, y = np.meshgrid(c, c)
    a = np.deg2rad(angle_deg)
    u = np.cos(a) * x + np.sin(a) * y
    v = -np.sin(a) * x + np.cos(a) * y
    return (-u if flip else u), v


def _muted_colour(rng: np.random.Generator) -> np.ndarray:
    """A low-saturation colour: background and clutter never look like an instrument."""
    return hsv_to_rgb(np.array([rng.uniform(), rng.uniform(0.0, 0.25), rng.uniform(0.35, 0.85)]))


def render_background(size: int, clutter: int, rng: np.random.Generator) -> np.ndarray:
    """A gradient with low-frequency blotches, a faint pattern and shapes of no class."""
    c1, c2 = _muted_colour(rng), _muted_colour(rng)
    y, x = np.mgrid[0:size, 0:size] / size
    a = rng.uniform(0, 2 * np.pi)
    t = np.clip((np.cos(a) * (x - 0.5) + np.sin(a) * (y - 0.5)) + 0.5, 0, 1)[..., None]
    img = (1 - t) * c1 + t * c2
    coarse = rng.normal(0, 0.06, (6, 6, 3))
    idx = np.minimum((np.arange(size) * 6) // size, 5)
    img = img + coarse[idx][:, idx]  # blocky blotches, smoothed by the pattern and JPEG
    pattern = rng.integers(3)
    freq = rng.uniform(8, 20)
    if pattern == 0:
        img = img + 0.05 * (np.sin(2 * np.pi * freq * (x + rng.uniform() * y)) > 0)[..., None]
    elif pattern == 1:
        img = img + 0.05 * (((x * freq).astype(int) + (y * freq).astype(int)) % 2)[..., None]
    for _ in range(clutter):
        side = int(rng.uniform(0.06, 0.2) * size)
        u, v = _canvas_coords(side, rng.uniform(0, 180), False)
        mask = clutter_shape(u, v, int(rng.integers(4)))
        y0, x0 = rng.integers(-side // 2, size - side // 2, 2)
        paste(img, mask, np.broadcast_to(_muted_colour(rng), (side, side, 3)), int(x0), int(y0))
    return img


def paste(img: np.ndarray, mask: np.ndarray, rgb: np.ndarray, x0: int, y0: int,
           labels: np.ndarray | None = None, value: int = 0) -> None:
    """Draw ``rgb`` where ``mask`` is set, with the canvas's top-left at (x0, y0); clips at borders."""
    h, w = mask.shape
    H, W = img.shape[:2]
    ys, xs = slice(max(y0, 0), min(y0 + h, H)), slice(max(x0, 0), min(x0 + w, W))
    my, mx = slice(ys.start - y0, ys.stop - y0), slice(xs.start - x0, xs.stop - x0)
    m = mask[my, mx]
    img[ys, xs][m] = rgb[my, mx][m]
    if labels is not None:
        labels[ys, xs][m] = value


def draw_instance(cls: InstrumentClass, canvas: int, angle: float, flip: bool,
                  colour_jitter: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Render one instance on a ``canvas``-pixel square; returns its tight (mask, rgb)."""
    u, v = _canvas_coords(canvas, angle, flip)
    mask, tone = SHAPES[cls.name](u, v)
    tone = np.clip(tone, 0, 1)[..., None]
    hsv = (1 - tone) * np.array(cls.primary_hsv) + tone * np.array(cls.secondary_hsv)
    hsv = hsv + colour_jitter[0]
    hsv[..., 1:] = np.clip(hsv[..., 1:] * colour_jitter[1, 1:], 0, 1)
    hsv[..., 2] *= 0.85 + 0.15 * (1 - (u + v + 2) / 4)  # light from the top left
    rgb = hsv_to_rgb(hsv)
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    crop = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    return mask[crop], rgb[crop]


def sample_instance(cls: InstrumentClass, image_size: int, coverage: tuple[float, float],
                    rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """An instance with random pose and colour whose mask covers a fraction in ``coverage``."""
    lo, hi = coverage
    angle = rng.uniform(-cls.max_rotation_deg, cls.max_rotation_deg)
    flip = bool(rng.random() < 0.5)
    jitter = np.array([[rng.uniform(-0.025, 0.025), 0, 0], [1, rng.uniform(0.85, 1.15), rng.uniform(0.85, 1.1)]])
    target = rng.uniform(lo, hi) * image_size ** 2
    ref = 64
    fill = draw_instance(cls, ref, angle, flip, jitter)[0].sum() / ref ** 2
    canvas = int(round(np.sqrt(target / fill)))
    canvas = min(canvas, int(0.95 * image_size))
    for _ in range(8):  # nudge the canvas until the coverage is inside the allowed range
        mask, rgb = draw_instance(cls, canvas, angle, flip, jitter)
        area = mask.sum() / image_size ** 2
        if lo <= area <= hi and max(mask.shape) <= image_size:
            return mask, rgb
        canvas += 1 if area < lo else -1
    raise ConfigError(f"coverage={coverage}: could not draw a {cls.name} covering that fraction of a "
                      f"{image_size} px image; widen the coverage range")


def place(mask: np.ndarray, occupied: np.ndarray, rng: np.random.Generator, tries: int = 200) -> tuple[int, int] | None:
    """A random top-left (x, y) where ``mask`` fits inside the image without touching ``occupied``."""
    H, W = occupied.shape
    h, w = mask.shape
    if h > H or w > W:
        return None
    for _ in range(tries):
        y, x = int(rng.integers(0, H - h + 1)), int(rng.integers(0, W - w + 1))
        if not (occupied[y:y + h, x:x + w] & mask).any():
            return x, y
    return None


def mark_occupied(occupied: np.ndarray, mask: np.ndarray, x: int, y: int) -> None:
    """Mark the object's pixels, grown by GAP pixels, as taken."""
    h, w = mask.shape
    H, W = occupied.shape
    ys, xs = np.nonzero(mask)
    for dy in range(-GAP, GAP + 1):
        for dx in range(-GAP, GAP + 1):
            occupied[np.clip(ys + y + dy, 0, H - 1), np.clip(xs + x + dx, 0, W - 1)] = True
