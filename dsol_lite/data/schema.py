"""The on-disk layout shared by the synthetic world and prepared real data (one schema).

Notebook: 00_setup_and_data.

::

    ROOT/
      dataset.json             manifest: classes, sample rate, how it was made, clip index
      clips/<clip_id>/
        clip.json              annotation of one clip (below)
        audio.wav              mono 16 kHz (any rate/channels are read, see data.audio)
        frame_000.jpg ...      one or more frames
        mask_000.png ...       optional: per-pixel object id (0 = background)

Box convention: ``box = [x1, y1, x2, y2]`` in **pixels of the stored frame**, half-open,
so an object covers columns ``x1 <= x < x2`` and rows ``y1 <= y < y2``
(``mask[y1:y2, x1:x2]`` holds all of it). Frame ``time`` is in seconds from the start of the
clip's audio. ``objects`` is ``null`` for a frame nobody annotated and ``[]`` for an annotated
frame without objects. Real datasets box only sounding objects; the world boxes every object
and says which ones sound.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from dsol_lite.errors import AnnotationError, DataError
from dsol_lite.folders import write_text

DATASET_SCHEMA = "dsol_lite.dataset/1"
CLIP_SCHEMA = "dsol_lite.clip/1"
MANIFEST_FILE = "dataset.json"
CLIP_FILE = "clip.json"
KINDS = ("solo", "duet", "cocktail", "grid2x2")
SPLITS = ("train", "val", "test")
NOISE_LABEL = "noise"


@dataclass(frozen=True)
class ObjectAnnotation:
    label: str
    box: tuple[int, int, int, int]  # x1, y1, x2, y2, pixels, half-open
    sounding: bool
    mask_value: int | None = None
    norm_box: tuple[float, float, float, float] | None = None  # real data: the box file's own x1, y1, x2, y2 in [0, 1]


@dataclass(frozen=True)
class FrameAnnotation:
    file: str
    time: float
    width: int
    height: int
    mask: str | None = None
    objects: tuple[ObjectAnnotation, ...] | None = None

    def sounding_objects(self) -> tuple[ObjectAnnotation, ...]:
        return tuple(o for o in self.objects or () if o.sounding)


@dataclass(frozen=True)
class SourceAnnotation:
    label: str  # a class name, or "noise"
    on_screen: bool


@dataclass(frozen=True)
class ClipAnnotation:
    clip_id: str
    kind: str
    split: str
    audio: str
    sample_rate: int
    num_samples: int
    frames: tuple[FrameAnnotation, ...]
    sources: tuple[SourceAnnotation, ...]
    extra: dict[str, Any] | None = None  # provenance, e.g. the world's noise level

    @property
    def duration(self) -> float:
        return self.num_samples / self.sample_rate

    def to_json(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class ClipEntry:
    clip_id: str
    kind: str
    split: str


@dataclass(frozen=True)
class DatasetManifest:
    root: Path
    name: str
    classes: tuple[str, ...]
    sample_rate: int
    clips: tuple[ClipEntry, ...]
    source: dict[str, Any]

    def clip_dir(self, clip_id: str) -> Path:
        return self.root / "clips" / clip_id

    def select(self, split: str | None = None, kinds: tuple[str, ...] | None = None) -> list[ClipEntry]:
        return [c for c in self.clips if (split is None or c.split == split) and (kinds is None or c.kind in kinds)]

    def to_json(self) -> dict:
        return {"schema": DATASET_SCHEMA, "name": self.name, "classes": list(self.classes),
                "sample_rate": self.sample_rate, "source": self.source,
                "clips": [[c.clip_id, c.kind, c.split] for c in self.clips]}


def write_json(path: Path, payload: dict) -> None:
    """Write JSON deterministically (sorted keys) via a temporary file and a rename."""
    write_text(path, json.dumps(payload, indent=1, sort_keys=True) + "\n")


def _load_json(path: Path) -> Any:
    if not path.is_file():
        raise DataError(path, "file is missing")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise AnnotationError(path, f"not valid JSON ({err})") from None


def _get(d: Any, key: str, kind: type | tuple[type, ...], path: Path, where: str) -> Any:
    if not isinstance(d, dict):
        raise AnnotationError(path, f"{where or 'top level'} must be an object, got {type(d).__name__}")
    if key not in d:
        raise AnnotationError(path, f"{where + '.' if where else ''}{key} is missing")
    value = d[key]
    if kind is not None and (not isinstance(value, kind) or (isinstance(value, bool) and bool not in _tuple(kind))):
        raise AnnotationError(path, f"{where + '.' if where else ''}{key} must be {_names(kind)}, got {value!r}")
    return value


def _tuple(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def _names(kind: type | tuple[type, ...]) -> str:
    return " or ".join(k.__name__ for k in _tuple(kind))


def read_manifest(root: str | Path) -> DatasetManifest:
    """Read and check ``ROOT/dataset.json``."""
    root = Path(root)
    path = root / MANIFEST_FILE
    if not path.is_file():
        raise DataError(root, f"no {MANIFEST_FILE}: not a dsol_lite dataset (make one with `dsol-lite synth`)")
    d = _load_json(path)
    schema = _get(d, "schema", str, path, "")
    if schema != DATASET_SCHEMA:
        raise AnnotationError(path, f"schema {schema!r} is not {DATASET_SCHEMA!r}")
    classes = _get(d, "classes", list, path, "")
    if not classes or not all(isinstance(c, str) and c for c in classes) or len(set(classes)) != len(classes):
        raise AnnotationError(path, f"classes must be a non-empty list of distinct names, got {classes!r}")
    if NOISE_LABEL in classes:
        raise AnnotationError(path, f"{NOISE_LABEL!r} is reserved for background noise, not a class")
    sample_rate = _get(d, "sample_rate", int, path, "")
    if sample_rate <= 0:
        raise AnnotationError(path, f"sample_rate must be positive, got {sample_rate}")
    clips, seen = [], set()
    for i, row in enumerate(_get(d, "clips", list, path, "")):
        if not (isinstance(row, list) and len(row) == 3 and all(isinstance(x, str) for x in row)):
            raise AnnotationError(path, f"clips[{i}] must be [clip_id, kind, split], got {row!r}")
        clip_id, kind, split = row
        if kind not in KINDS or split not in SPLITS:
            raise AnnotationError(path, f"clips[{i}] {clip_id!r}: kind must be one of {KINDS} and split one of "
                                        f"{SPLITS}, got {kind!r}, {split!r}")
        if clip_id in seen or "/" in clip_id or clip_id.startswith("."):
            raise AnnotationError(path, f"clips[{i}]: clip id {clip_id!r} is repeated or not a plain folder name")
        seen.add(clip_id)
        clips.append(ClipEntry(clip_id, kind, split))
    return DatasetManifest(root, _get(d, "name", str, path, ""), tuple(classes), sample_rate, tuple(clips),
                           _get(d, "source", dict, path, ""))


def _read_box(raw: Any, path: Path, where: str, width: int, height: int) -> tuple[int, int, int, int]:
    if not (isinstance(raw, list) and len(raw) == 4 and all(isinstance(x, int) and not isinstance(x, bool)
                                                             for x in raw)):
        raise AnnotationError(path, f"{where}.box must be four integers [x1, y1, x2, y2], got {raw!r}")
    x1, y1, x2, y2 = raw
    if not (0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height):
        raise AnnotationError(path, f"{where}.box {raw} is empty or lies outside the {width}x{height} frame "
                                    f"(need 0 <= x1 < x2 <= width, 0 <= y1 < y2 <= height)")
    return x1, y1, x2, y2


def _read_norm_box(raw: Any, path: Path, where: str) -> tuple[float, float, float, float] | None:
    """An object's optional ``norm_box``: the normalised ``[x1, y1, x2, y2]`` of a real box file, from
    which evaluation draws the box at the scoring size as DSOL's code does."""
    if raw is None:
        return None
    if not (isinstance(raw, list) and len(raw) == 4 and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                             for v in raw)):
        raise AnnotationError(path, f"{where}.norm_box must be four numbers [x1, y1, x2, y2] or absent, got {raw!r}")
    x1, y1, x2, y2 = (float(v) for v in raw)
    if not (0 <= x1 < x2 <= 1 and 0 <= y1 < y2 <= 1):
        raise AnnotationError(path, f"{where}.norm_box {raw} is empty or outside [0, 1]")
    return x1, y1, x2, y2


def _read_frame(raw: Any, path: Path, where: str, classes: tuple[str, ...], duration: float) -> FrameAnnotation:
    width = _get(raw, "width", int, path, where)
    height = _get(raw, "height", int, path, where)
    time = float(_get(raw, "time", (int, float), path, where))
    if width <= 0 or height <= 0:
        raise AnnotationError(path, f"{where}: frame size {width}x{height} is not positive")
    if not 0 <= time <= duration:
        raise AnnotationError(path, f"{where}.time {time} s lies outside the {duration:.3f} s of audio")
    mask = raw.get("mask")
    if mask is not None and not isinstance(mask, str):
        raise AnnotationError(path, f"{where}.mask must be a file name or null, got {mask!r}")
    objects = raw.get("objects")
    if objects is not None:
        if not isinstance(objects, list):
            raise AnnotationError(path, f"{where}.objects must be a list or null, got {objects!r}")
        parsed = []
        for j, o in enumerate(objects):
            w = f"{where}.objects[{j}]"
            label = _get(o, "label", str, path, w)
            if label not in classes:
                raise AnnotationError(path, f"{w}.label {label!r} is not a class of this dataset")
            mask_value = o.get("mask_value")
            if mask_value is not None and (not isinstance(mask_value, int) or not 1 <= mask_value <= 255):
                raise AnnotationError(path, f"{w}.mask_value must be an integer in 1..255, got {mask_value!r}")
            parsed.append(ObjectAnnotation(label, _read_box(_get(o, "box", None, path, w), path, w, width, height),
                                           _get(o, "sounding", bool, path, w), mask_value,
                                           _read_norm_box(o.get("norm_box"), path, w)))
        values = [o.mask_value for o in parsed if o.mask_value is not None]
        if len(values) != len(set(values)):
            raise AnnotationError(path, f"{where}: two objects share a mask_value")
        objects = tuple(parsed)
    return FrameAnnotation(_get(raw, "file", str, path, where), time, width, height, mask, objects)


def read_clip(manifest: DatasetManifest, clip_id: str) -> ClipAnnotation:
    """Read and check one clip's ``clip.json`` against the manifest."""
    path = manifest.clip_dir(clip_id) / CLIP_FILE
    d = _load_json(path)
    if _get(d, "schema", str, path, "") != CLIP_SCHEMA:
        raise AnnotationError(path, f"schema {d['schema']!r} is not {CLIP_SCHEMA!r}")
    if _get(d, "clip_id", str, path, "") != clip_id:
        raise AnnotationError(path, f"clip_id {d['clip_id']!r} does not match its folder {clip_id!r}")
    kind, split = _get(d, "kind", str, path, ""), _get(d, "split", str, path, "")
    if kind not in KINDS or split not in SPLITS:
        raise AnnotationError(path, f"kind {kind!r} / split {split!r} not in {KINDS} / {SPLITS}")
    sample_rate = _get(d, "sample_rate", int, path, "")
    if sample_rate != manifest.sample_rate:
        raise AnnotationError(path, f"sample_rate {sample_rate} differs from the dataset's {manifest.sample_rate}")
    num_samples = _get(d, "num_samples", int, path, "")
    if num_samples <= 0:
        raise AnnotationError(path, f"num_samples must be positive, got {num_samples}")
    sources = []
    for i, s in enumerate(_get(d, "sources", list, path, "")):
        label = _get(s, "label", str, path, f"sources[{i}]")
        if label not in manifest.classes and label != NOISE_LABEL:
            raise AnnotationError(path, f"sources[{i}].label {label!r} is not a class of this dataset")
        sources.append(SourceAnnotation(label, _get(s, "on_screen", bool, path, f"sources[{i}]")))
    raw_frames = _get(d, "frames", list, path, "")
    if not raw_frames:
        raise AnnotationError(path, "frames is empty: a clip needs at least one frame")
    frames = tuple(_read_frame(f, path, f"frames[{i}]", manifest.classes, num_samples / sample_rate)
                   for i, f in enumerate(raw_frames))
    on_screen = {s.label for s in sources if s.on_screen}
    for i, frame in enumerate(frames):
        for o in frame.objects or ():
            if o.sounding and o.label not in on_screen:
                raise AnnotationError(path, f"frames[{i}]: object {o.label!r} is marked sounding but no on-screen "
                                            f"source has that label")
            if not o.sounding and o.label in on_screen:
                raise AnnotationError(path, f"frames[{i}]: object {o.label!r} is marked silent but an on-screen "
                                            f"source has that label")
    return ClipAnnotation(clip_id, kind, split, _get(d, "audio", str, path, ""), sample_rate, num_samples, frames,
                          tuple(sources), d.get("extra"))


def clip_to_json(clip: ClipAnnotation) -> dict:
    """The ``clip.json`` payload of an annotation (inverse of ``read_clip``)."""
    d = clip.to_json()
    d["schema"] = CLIP_SCHEMA
    for frame in d["frames"]:
        if frame["objects"] is not None:
            for o in frame["objects"]:
                o["box"] = list(o["box"])
                if o["norm_box"] is None:
                    del o["norm_box"]  # synthetic boxes are exact in pixels
                else:
                    o["norm_box"] = list(o["norm_box"])
    return d
