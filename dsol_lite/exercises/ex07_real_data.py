"""Exercise of notebook 07_real_data_music: from an annotation key to the frame of a video.

Write ``frame_for_key(key, fps)``: ``key`` is a DSOL MUSIC box key
``<id>_0_1000/frame_SSS/NNNNN.jpg`` whose NNNNN counts frames at 30 fps; return the index of the
frame on screen at that instant in a video of ``fps`` frames per second (frame ``i`` is shown
from ``i / fps`` until ``(i + 1) / fps``).
"""

from __future__ import annotations

import math
import re
from typing import Callable


def frame_for_key(key: str, fps: float) -> int:
    """Solution: key -> time (NNNNN / 30 s) -> the last frame starting at or before it."""
    number = int(re.search(r"/(\d+)\.jpg$", key).group(1))
    return math.floor(number / 30 * fps + 1e-9)  # 1e-9: 7/30 * 30 must give 7, not 6.999...


def check_frame_for_key(fn: Callable[[str, float], int]) -> str:
    cases = [("a_0_1000/frame_000/00000.jpg", 25, 0), ("a_0_1000/frame_001/00037.jpg", 30, 37),
             ("a_0_1000/frame_001/00037.jpg", 25, 30), ("a-b_c_0_1000/frame_012/00381.jpg", 25, 317),
             ("x_0_1000/frame_002/00081.jpg", 60, 162), ("x_0_1000/frame_010/00314.jpg", 24, 251)]
    for key, fps, expected in cases:
        got = fn(key, fps)
        if got != expected:
            hint = " (frame numbers in keys count at 30 fps: convert to seconds first)" if got == int(
                key[-9:-4]) else ""
            raise AssertionError(f"{key} at {fps} fps: expected frame {expected}, got {got}{hint}")
    return "correct: keys are times, and a 25-fps video shows frame floor(t * 25) at time t"
