"""Decode videos with PyAV: frames at given times, 16 kHz mono audio; make small test videos.

Notebook: 07_real_data_music.

Frames are chosen by **time**, never by frame number: the frame shown at time ``t`` is the last
one whose presentation time is ``<= t``. A 25-fps and a 30-fps copy of the same video give the
picture on screen at the same instant, which is what an annotation key made at 30 fps means.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from dsol_lite.errors import DataError

try:
    import av
except ImportError:  # pragma: no cover - av is a dependency; the message helps a broken install
    av = None


def _require_av() -> None:
    if av is None:
        raise ImportError("reading videos needs PyAV: pip install av")


@dataclass(frozen=True)
class VideoInfo:
    path: Path
    duration: float  # seconds
    fps: float
    width: int
    height: int
    has_audio: bool


def _open(path: str | Path):
    _require_av()
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "video file is missing")
    try:
        return av.open(str(path))
    except (av.error.FFmpegError, UnicodeDecodeError) as err:
        raise DataError(path, f"cannot open video ({err})") from None


def probe(path: str | Path) -> VideoInfo:
    """Duration, frame rate, size and whether there is a sound track; clear error if unreadable."""
    with _open(path) as container:
        if not container.streams.video:
            raise DataError(path, "has no video stream")
        v = container.streams.video[0]
        duration = (float(v.duration * v.time_base) if v.duration else
                    container.duration / 1e6 if container.duration else 0.0)
        if duration <= 0:
            raise DataError(path, "duration is unknown or zero")
        fps = float(v.average_rate or v.guessed_rate or 0)
        return VideoInfo(Path(path), duration, fps, v.codec_context.width, v.codec_context.height,
                         bool(container.streams.audio))


def frames_at(path: str | Path, times: list[float]) -> list[np.ndarray]:
    """RGB uint8 frames (H, W, 3) shown at each of ``times`` (seconds, any order), decoding once."""
    order = sorted(range(len(times)), key=lambda i: times[i])
    out: list[np.ndarray | None] = [None] * len(times)
    k, shown = 0, None
    try:
        with _open(path) as container:
            stream = container.streams.video[0]
            for frame in container.decode(stream):
                t = float(frame.pts * stream.time_base) if frame.pts is not None else frame.time
                while k < len(order) and times[order[k]] < t - 1e-6:  # the frame before this one is on screen
                    if shown is None:
                        raise DataError(path, f"no frame is shown at {times[order[k]]:.3f} s (first at {t:.3f} s)")
                    out[order[k]] = shown
                    k += 1
                if k == len(order):
                    break
                shown = frame.to_ndarray(format="rgb24")
    except av.error.FFmpegError as err:
        raise DataError(path, f"cannot decode video ({err})") from None
    while k < len(order):  # times past the last frame's start: it stays on screen until the end
        if shown is None:
            raise DataError(path, "holds no decodable frame")
        out[order[k]] = shown
        k += 1
    return out  # type: ignore[return-value]


def audio_track(path: str | Path, sample_rate: int = 16000) -> np.ndarray:
    """The sound track as mono float32 at ``sample_rate`` (PyAV's resampler)."""
    chunks, start = [], None
    try:
        with _open(path) as container:
            if not container.streams.audio:
                raise DataError(path, "has no sound track")
            resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
            for frame in container.decode(container.streams.audio[0]):
                start = frame.time if start is None and frame.time is not None else start
                chunks += [f.to_ndarray().reshape(-1) for f in resampler.resample(frame)]
            chunks += [f.to_ndarray().reshape(-1) for f in resampler.resample(None)]
    except av.error.FFmpegError as err:
        raise DataError(path, f"cannot decode the sound track ({err})") from None
    if not chunks:
        raise DataError(path, "the sound track holds no samples")
    wave = np.concatenate(chunks).astype(np.float32)
    offset = int(round((start or 0.0) * sample_rate))  # keep sample 0 at time 0, the frames' clock
    wave = np.concatenate([np.zeros(offset, np.float32), wave]) if offset > 0 else wave[-offset:]
    if not np.isfinite(wave).all():
        raise DataError(path, "the sound track contains NaN or infinite samples")
    return wave


def frame_code(index: int, height: int, width: int, bits: int = 10) -> np.ndarray:
    """A test frame that shows its own index as ``bits`` black/white vertical bars (robust to
    lossy coding): ``read_frame_code`` recovers the index from a decoded frame."""
    bars = np.array([(index >> b) & 1 for b in range(bits)], np.uint8) * 255
    row = np.repeat(bars, int(np.ceil(width / bits)))[:width]
    return np.repeat(np.repeat(row[None, :, None], height, 0), 3, 2)


def read_frame_code(frame: np.ndarray, bits: int = 10) -> int:
    width = frame.shape[1]
    step = int(np.ceil(width / bits))
    centres = [min(b * step + step // 2, width - 1) for b in range(bits)]
    return sum(int(frame[:, c].mean() > 127) << b for b, c in enumerate(centres))


def make_video(path: str | Path, seconds: float, fps: int, size: tuple[int, int] = (160, 96),
               tone_hz: float = 440.0, sample_rate: int = 44100, frames: list[np.ndarray] | None = None,
               audio: np.ndarray | None = None) -> Path:
    """Write a small H.264/AAC mp4: by default frame ``i`` shows ``frame_code(i)`` and the sound is a
    sine at ``tone_hz``; or give ``frames`` (RGB uint8, any count, shown in turn for equal times)
    and ``audio`` (mono float at ``sample_rate``). Notebook 07 and the tests make their videos here."""
    _require_av()
    width, height = size
    n = int(round(seconds * fps))
    if audio is None:
        t = np.arange(int(seconds * sample_rate)) / sample_rate
        audio = 0.3 * np.sin(2 * np.pi * tone_hz * t)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as out:
        v = out.add_stream("libx264", rate=fps)
        v.width, v.height, v.pix_fmt = width, height, "yuv420p"
        v.options = {"preset": "ultrafast", "crf": "18"}
        a = out.add_stream("aac", rate=sample_rate)
        a.layout = "mono"
        for i in range(n):
            image = frame_code(i, height, width) if frames is None else frames[i * len(frames) // n]
            for packet in v.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")):
                out.mux(packet)
        out.mux(v.encode(None))
        samples = np.asarray(audio, np.float32)
        for start in range(0, len(samples), 1024):
            frame = av.AudioFrame.from_ndarray(samples[None, start:start + 1024], format="flt", layout="mono")
            frame.sample_rate, frame.pts, frame.time_base = sample_rate, start, Fraction(1, sample_rate)
            for packet in a.encode(frame):
                out.mux(packet)
        out.mux(a.encode(None))
    return path
