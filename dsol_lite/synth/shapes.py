"""Shapes of the world's instruments, drawn on a local canvas.

Notebook: 00_setup_and_data.

Every shape is a function of canvas coordinates ``(u, v)`` in ``[-1, 1]`` (``u`` to the right,
``v`` downwards) that returns ``(mask, tone)``: which canvas pixels belong to the object and a
tone in ``[0, 1]`` that picks between the class's primary (0) and secondary (1) colour. Shapes
stay inside the unit disc so that any rotation keeps them on the canvas.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

Array = np.ndarray
ShapeFn = Callable[[Array, Array], tuple[Array, Array]]


def ellipse(u: Array, v: Array, cx: float, cy: float, rx: float, ry: float) -> Array:
    return ((u - cx) / rx) ** 2 + ((v - cy) / ry) ** 2 <= 1.0


def rect(u: Array, v: Array, cx: float, cy: float, hw: float, hh: float) -> Array:
    return (np.abs(u - cx) <= hw) & (np.abs(v - cy) <= hh)


def triangle(u: Array, v: Array, a: tuple, b: tuple, c: tuple) -> Array:
    """Points inside the triangle abc (either orientation)."""

    def side(p, q):
        return (q[0] - p[0]) * (v - p[1]) - (q[1] - p[1]) * (u - p[0])

    s1, s2, s3 = side(a, b), side(b, c), side(c, a)
    return ((s1 >= 0) & (s2 >= 0) & (s3 >= 0)) | ((s1 <= 0) & (s2 <= 0) & (s3 <= 0))


def guitar(u: Array, v: Array) -> tuple[Array, Array]:
    body = ellipse(u, v, 0, 0.38, 0.6, 0.45) | ellipse(u, v, 0, -0.12, 0.45, 0.36)
    hole = ellipse(u, v, 0, 0.12, 0.14, 0.14)
    neck = rect(u, v, 0, -0.68, 0.08, 0.28)
    grain = 0.35 * (np.sin(28 * v + 3 * np.sin(5 * u)) > 0.3)
    tone = np.where(neck & ~body, 1.0, grain)
    return (body & ~hole) | neck, tone


def violin(u: Array, v: Array) -> tuple[Array, Array]:
    body = ellipse(u, v, 0, 0.35, 0.42, 0.4) | ellipse(u, v, 0, -0.25, 0.34, 0.32)
    waist = ellipse(u, v, 0.47, 0.05, 0.16, 0.14) | ellipse(u, v, -0.47, 0.05, 0.16, 0.14)
    neck = rect(u, v, 0, -0.75, 0.06, 0.22)
    f_holes = rect(u, v, 0.16, 0.12, 0.025, 0.15) | rect(u, v, -0.16, 0.12, 0.025, 0.15)
    tone = np.where(f_holes | (neck & ~body), 1.0, 0.3 * (v + 1) / 2)
    return (body & ~waist) | neck, tone


def flute(u: Array, v: Array) -> tuple[Array, Array]:
    tube = rect(u, v, 0, 0, 0.17, 0.93)
    keys = np.zeros_like(tube)
    for cy in (-0.55, -0.25, 0.05, 0.35, 0.65):
        keys |= ellipse(u, v, 0, cy, 0.09, 0.07)
    tone = np.where(keys, 1.0, 0.35 * (np.sin(35 * v) > 0.85))
    return tube, tone


def trumpet(u: Array, v: Array) -> tuple[Array, Array]:
    bell = triangle(u, v, (-0.05, 0), (0.85, -0.45), (0.85, 0.45)) | ellipse(u, v, 0.85, 0, 0.09, 0.45)
    tube = rect(u, v, -0.45, 0, 0.45, 0.09)
    valves = (rect(u, v, -0.5, -0.2, 0.05, 0.13) | rect(u, v, -0.3, -0.2, 0.05, 0.13)
              | rect(u, v, -0.1, -0.2, 0.05, 0.13))
    tone = np.where(valves & ~tube, 1.0, 0.4 * np.clip(np.hypot(u - 0.5, v + 0.2), 0, 1))
    return bell | tube | valves, tone


def xylophone(u: Array, v: Array) -> tuple[Array, Array]:
    mask = rect(u, v, 0, -0.42, 0.9, 0.05) | rect(u, v, 0, 0.42, 0.9, 0.05)
    tone = np.full(u.shape, 0.5)
    for i in range(6):
        bar = rect(u, v, -0.72 + 0.29 * i, 0, 0.11, 0.72 - 0.07 * i)
        mask |= bar
        tone = np.where(bar, i / 5, tone)
    return mask, tone


def drum(u: Array, v: Array) -> tuple[Array, Array]:
    head = ellipse(u, v, 0, -0.38, 0.7, 0.22)
    body = rect(u, v, 0, 0.12, 0.7, 0.5) | ellipse(u, v, 0, 0.62, 0.7, 0.22)
    zigzag = (((u * 3 + np.abs(((v * 3) % 2) - 1)) % 1) > 0.5) * 0.35
    return head | body, np.where(head, 1.0, zigzag)


def cello(u: Array, v: Array) -> tuple[Array, Array]:
    body = ellipse(u, v, 0, 0.38, 0.42, 0.42) | ellipse(u, v, 0, -0.27, 0.36, 0.34)
    neck = rect(u, v, 0, -0.78, 0.06, 0.18)
    pin = rect(u, v, 0, 0.88, 0.025, 0.08)
    tone = np.where(neck | pin, 1.0, 0.35 * (np.sin(18 * (u + v)) > 0))
    return body | neck | pin, tone


def clarinet(u: Array, v: Array) -> tuple[Array, Array]:
    tube = rect(u, v, 0, -0.1, 0.13, 0.82)
    flare = np.abs(u) <= 0.13 + np.clip(v - 0.55, 0, None) * 0.9
    bell = flare & (v >= 0.5) & (v <= 0.93)
    keys = np.zeros_like(tube)
    for cy in (-0.6, -0.35, -0.1, 0.15, 0.4):
        keys |= rect(u, v, 0, cy, 0.13, 0.025)
    return tube | bell, np.where(keys, 1.0, 0.0)


def harp(u: Array, v: Array) -> tuple[Array, Array]:
    a, b, c = (-0.62, 0.82), (0.72, 0.82), (-0.62, -0.88)
    outer = triangle(u, v, a, b, c)
    inner = triangle(u, v, (-0.48, 0.68), (0.36, 0.68), (-0.48, -0.5))
    strings = np.zeros_like(outer)
    for k in range(6):
        strings |= rect(u, v, -0.38 + 0.12 * k, 0, 0.022, 1.0)
    mask = (outer & ~inner) | (inner & strings)
    return mask, np.where(inner & strings, 1.0, 0.0)


def tuba(u: Array, v: Array) -> tuple[Array, Array]:
    bell = ellipse(u, v, 0.22, -0.42, 0.5, 0.45)
    mouth = ellipse(u, v, 0.22, -0.42, 0.3, 0.27)
    coil = ellipse(u, v, -0.12, 0.38, 0.55, 0.5) & ~ellipse(u, v, -0.12, 0.38, 0.32, 0.28)
    tone = np.where(mouth, 1.0, 0.25 * (u + 1) / 2)
    return bell | coil, tone


def clutter_shape(u: Array, v: Array, kind: int) -> Array:
    """Background shapes that belong to no class: a square, a ring, a bar or a cross."""
    if kind == 0:
        return rect(u, v, 0, 0, 0.6, 0.6)
    if kind == 1:
        return ellipse(u, v, 0, 0, 0.8, 0.8) & ~ellipse(u, v, 0, 0, 0.55, 0.55)
    if kind == 2:
        return rect(u, v, 0, 0, 0.95, 0.12)
    return rect(u, v, 0, 0, 0.7, 0.15) | rect(u, v, 0, 0, 0.15, 0.7)


SHAPES: dict[str, ShapeFn] = {
    "guitar": guitar,
    "violin": violin,
    "flute": flute,
    "trumpet": trumpet,
    "xylophone": xylophone,
    "drum": drum,
    "cello": cello,
    "clarinet": clarinet,
    "harp": harp,
    "tuba": tuba,
}
