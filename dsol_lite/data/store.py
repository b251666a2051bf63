"""The clip store: every clip of a dataset decoded once and held as tensors, on the device if it fits.

Notebook: 00_setup_and_data (what a dataset item is made of); every trainer uses it.

Decoding a JPEG and an audio file per item, every epoch, on CPU loader workers is what keeps a
GPU idle. A ``ClipStore`` decodes each split of a dataset once (in threads), or reads it from a
prepared cache (``data.prepared``), into a handful of tensors per split (``SplitTensors``):

    frames       (F, 3, N, N) uint8   every frame of the split's clips, N x N pixels
    audio        (T,) int16            every clip's waveform back to back, then 4 s of silence (float32
                                       if a file is not 16-bit)
    boxes        (F, M, 6) int64       per frame up to M boxes: x1, y1, x2, y2 in the annotation's
                                       pixels, class, sounding (class -1: no box)

plus where each clip's frames and samples start, the frames' times and annotated sizes, and the
classes each clip hears. The tensors live on the training device when they fit (else in pinned
host memory, copied per batch). Datasets (``data.datasets``) are views of a store that make whole
batches by indexing these tensors. ``ClipStore.open`` keeps one store per dataset folder in a
process: every stage of a run and every dataset a notebook makes share it, and the manifest is
read once.

Frames keep their stored size when all are square and of one size (the synthetic world); other
frames (MUSIC's 16:9) are resized once to ``frame_size`` x ``frame_size`` (default: their largest
height), as the prepared cache does. ``sized(split, S)`` gives the frames resized to S x S
(antialiased, computed once per size) for evaluation.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torchvision.transforms.v2 import functional as TF

from dsol_lite.data.audio import load_audio
from dsol_lite.data.images import load_image
from dsol_lite.data.prepared import PreparedCache, open_cache
from dsol_lite.data.schema import SPLITS, ClipAnnotation, DatasetManifest, read_clip, read_manifest
from dsol_lite.errors import DataError

PCM16 = 32768.0  # a 16-bit sample k is the float k / 32768, as soundfile reads it
TAIL_SECONDS = 4  # silence after the last clip's audio: an audio window may reach past it


@dataclass
class SplitTensors:
    """One split of a store: annotations and the decoded tensors (see the module docstring)."""

    clips: list[ClipAnnotation]
    frames: torch.Tensor  # (F, 3, N, N) uint8
    frame_start: torch.Tensor  # (C,) int64, first frame of each clip
    frame_count: torch.Tensor  # (C,) int64
    frame_time: torch.Tensor  # (F,) float64 seconds into the clip's audio
    frame_wh: torch.Tensor  # (F, 2) int64: the width and height the boxes are given in
    annotated: torch.Tensor  # (F,) bool: frame.objects is not None
    boxes: torch.Tensor  # (F, M, 6) int64
    norm_boxes: torch.Tensor  # (F, M, 4) float64: real boxes' normalised x1, y1, x2, y2 (NaN: a pixel box)
    audio: torch.Tensor  # (T,) int16 or float32
    audio_start: torch.Tensor  # (C,) int64
    audio_length: torch.Tensor  # (C,) int64
    sounding: torch.Tensor  # (C, K) float32: classes heard from on-screen sources
    label: torch.Tensor  # (C,) int64: a single-source clip's sounding class (-1 for other clips)
    row: dict[str, int] = field(default_factory=dict)  # clip id -> its row
    resized: dict[int, torch.Tensor] = field(default_factory=dict)  # size -> (F, 3, S, S) uint8

    @property
    def frame_size(self) -> int:
        return self.frames.shape[-1]

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.frames, self.audio, self.boxes))

    def to(self, device: torch.device, pin: bool = False) -> "SplitTensors":
        for name, value in vars(self).items():
            if isinstance(value, torch.Tensor):
                value = value.to(device)
                setattr(self, name, value.pin_memory() if pin else value)
        return self


def _decode_clip(manifest: DatasetManifest, clip: ClipAnnotation, frame_size: int | None,
                 cache: PreparedCache | None) -> tuple[list[np.ndarray], np.ndarray]:
    """The clip's frames (H, W, 3 uint8, at ``frame_size`` when given) and its waveform (float32)."""
    folder = manifest.clip_dir(clip.clip_id)
    if cache is not None:
        return [cache.frame(clip.clip_id, k) for k in range(len(clip.frames))], cache.waveform(clip.clip_id)
    frames = []
    for f in clip.frames:
        image = load_image(folder / f.file, (f.width, f.height))
        if frame_size is not None and image.shape[:2] != (frame_size, frame_size):
            image = TF.resize(torch.from_numpy(image).permute(2, 0, 1), [frame_size, frame_size],
                              antialias=True).permute(1, 2, 0).numpy()
        frames.append(image)
    path = folder / clip.audio
    wave = load_audio(path, manifest.sample_rate)
    if abs(len(wave) - clip.num_samples) > manifest.sample_rate // 100:
        raise DataError(path, f"holds {len(wave)} samples but its annotation says {clip.num_samples}")
    return frames, wave


def load_split(manifest: DatasetManifest, split: str, cache: PreparedCache | None = None,
               frame_size: int | None = None, threads: int | None = None) -> SplitTensors:
    """Decode every clip of ``split`` (all kinds) into ``SplitTensors`` on the CPU."""
    entries = manifest.select(split)
    clips = [read_clip(manifest, e.clip_id) for e in entries]
    sizes = {(f.width, f.height) for c in clips for f in c.frames}
    if cache is not None:
        frame_size = cache.image_size
    elif frame_size is None and (len(sizes) > 1 or any(w != h for w, h in sizes)):
        frame_size = max((h for _, h in sizes), default=None)  # non-square or mixed: one square size
    with ThreadPoolExecutor(threads or os.cpu_count() or 1) as pool:
        decoded = list(pool.map(lambda c: _decode_clip(manifest, c, frame_size, cache), clips))
    classes = {name: k for k, name in enumerate(manifest.classes)}
    images = [image for frames, _ in decoded for image in frames]
    annotations = [f for c in clips for f in c.frames]
    most = max((len(f.objects or ()) for f in annotations), default=0)
    boxes = torch.full((len(annotations), max(most, 1), 6), -1, dtype=torch.int64)
    norm_boxes = torch.full((len(annotations), max(most, 1), 4), float("nan"), dtype=torch.float64)
    for i, f in enumerate(annotations):
        for j, o in enumerate(f.objects or ()):
            boxes[i, j] = torch.tensor([*o.box, classes[o.label], int(o.sounding)])
            if o.norm_box is not None:
                norm_boxes[i, j] = torch.tensor(o.norm_box, dtype=torch.float64)
    waves = [w for _, w in decoded]
    lengths = torch.tensor([len(w) for w in waves], dtype=torch.int64)
    waves.append(np.zeros(TAIL_SECONDS * manifest.sample_rate, np.float32))  # room for a window past the last clip
    wave = np.concatenate(waves)
    if np.array_equal(np.round(wave * PCM16), wave * PCM16) and np.abs(wave).max(initial=0) <= 1:
        audio = torch.from_numpy(np.round(wave * PCM16).clip(-32768, 32767).astype(np.int16))  # 16-bit files: exact
    else:
        audio = torch.from_numpy(wave.astype(np.float32))
    counts = torch.tensor([len(c.frames) for c in clips], dtype=torch.int64)
    sounding = torch.zeros(len(clips), len(manifest.classes))
    label = torch.full((len(clips),), -1, dtype=torch.int64)
    for i, c in enumerate(clips):
        heard = [classes[s.label] for s in c.sources if s.on_screen]
        sounding[i, heard] = 1
        if len(heard) == 1:
            label[i] = heard[0]
    n = frame_size or (images[0].shape[0] if images else 1)
    return SplitTensors(
        clips=clips,
        frames=(torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous() if images
                else torch.zeros(0, 3, n, n, dtype=torch.uint8)),
        frame_start=torch.cumsum(counts, 0) - counts, frame_count=counts,
        frame_time=torch.tensor([f.time for f in annotations], dtype=torch.float64),
        frame_wh=torch.tensor([[f.width, f.height] for f in annotations], dtype=torch.int64).view(-1, 2),
        annotated=torch.tensor([f.objects is not None for f in annotations], dtype=torch.bool),
        boxes=boxes, norm_boxes=norm_boxes, audio=audio, audio_start=torch.cumsum(lengths, 0) - lengths,
        audio_length=lengths, sounding=sounding, label=label, row={c.clip_id: i for i, c in enumerate(clips)})


def nearest_rows(out_size: int, in_size: torch.Tensor) -> torch.Tensor:
    """For every output pixel of an ``out_size`` raster, the input pixel that nearest-neighbour
    resizing reads (``torch`` / ``torchvision``'s legacy rule: ``floor(i * in / out)`` in float32),
    per input size: ``(len(in_size), out_size)``."""
    scale = in_size.float()[:, None] / out_size
    return torch.minimum(torch.floor(torch.arange(out_size, device=in_size.device).float() * scale).long(),
                         in_size[:, None] - 1)


def box_masks(boxes: torch.Tensor, frame_wh: torch.Tensor, size: int,
              norm_boxes: torch.Tensor | None = None) -> torch.Tensor:
    """Rasters ``(B, M, S, S)`` bool of each frame's boxes at ``size`` x ``size``. A pixel box (the
    synthetic world's, exact) is drawn at the annotated size and resized with nearest-neighbour;
    a real box with its file's normalised coordinates (``norm_boxes``, not NaN) is drawn as DSOL's
    evaluation does, ``mask[int(y1 S):int(y2 S), int(x1 S):int(x2 S)] = 1``."""
    ys = nearest_rows(size, frame_wh[:, 1])  # (B, S) source row of each output row
    xs = nearest_rows(size, frame_wh[:, 0])
    x1, y1, x2, y2 = (boxes[..., k, None] for k in range(4))  # (B, M, 1)
    inside_y = (ys[:, None] >= y1) & (ys[:, None] < y2)  # (B, M, S)
    inside_x = (xs[:, None] >= x1) & (xs[:, None] < x2)
    if norm_boxes is not None:
        real = ~torch.isnan(norm_boxes[..., :1])  # (B, M, 1)
        edges = torch.trunc(torch.nan_to_num(norm_boxes) * size).long()  # Python's int(): towards zero
        pixel = torch.arange(size, device=boxes.device)
        inside_y = torch.where(real, (pixel >= edges[..., 1, None]) & (pixel < edges[..., 3, None]), inside_y)
        inside_x = torch.where(real, (pixel >= edges[..., 0, None]) & (pixel < edges[..., 2, None]), inside_x)
    return inside_y[..., :, None] & inside_x[..., None, :] & (boxes[..., 4, None, None] >= 0)


class ClipStore:
    """A dataset's decoded clips, split by split, on one device (see the module docstring)."""

    _open: dict[tuple, "ClipStore"] = {}

    def __init__(self, manifest: DatasetManifest, prepared: str | Path | None = None, image_size: int | None = None,
                 device: torch.device | str = "cpu", frame_size: int | None = None) -> None:
        self.manifest, self.device = manifest, torch.device(device)
        self.cache = open_cache(prepared, manifest, image_size) if prepared is not None else None
        self.frame_size = frame_size
        self.splits: dict[str, SplitTensors] = {}

    @classmethod
    def open(cls, root: "str | Path | ClipStore", prepared: str | Path | None = None, image_size: int | None = None,
             device: torch.device | str = "cpu") -> "ClipStore":
        """The store of the dataset at ``root`` (one per folder, cache and device in a process; a
        store whose manifest or cache changed on disk is made anew). A ``ClipStore`` is returned as is."""
        if isinstance(root, ClipStore):
            return root
        root = Path(root)
        stamp = [_stamp(root / "dataset.json")] + ([_stamp(Path(prepared) / "cache.json")] if prepared else [])
        key = (str(root.resolve()), str(Path(prepared).resolve()) if prepared else None, str(torch.device(device)))
        store = cls._open.get(key)
        if store is None or store._stamp != stamp:
            store = cls(read_manifest(root), prepared, image_size, device)
            store._stamp = stamp
            cls._open[key] = store
        elif prepared is not None and store.cache.image_size != image_size:
            store.cache = open_cache(prepared, store.manifest, image_size)  # the clear error
        return store

    @classmethod
    def release_all(cls) -> None:
        """Forget every open store (frees their memory once no dataset holds them)."""
        cls._open.clear()

    def split(self, name: str) -> SplitTensors:
        """The decoded tensors of split ``name`` (decoded on first use)."""
        if name not in SPLITS:
            raise DataError(self.manifest.root, f"no split {name!r}; splits are {SPLITS}")
        if name not in self.splits:
            data = load_split(self.manifest, name, self.cache, self.frame_size)
            pin = self.device.type == "cuda" and not _fits(data, self.device)
            self.splits[name] = data.to(torch.device("cpu") if pin else self.device, pin=pin)
        return self.splits[name]

    def sized(self, split: str, size: int) -> torch.Tensor:
        """The split's frames at ``size`` x ``size`` (uint8, antialiased; made once per size)."""
        data = self.split(split)
        if size == data.frame_size:
            return data.frames
        if size not in data.resized:
            parts = [TF.resize(data.frames[i:i + 256], [size, size], antialias=True)
                     for i in range(0, len(data.frames), 256)]
            data.resized[size] = torch.cat(parts) if parts else data.frames.new_zeros(0, 3, size, size)
        return data.resized[size]


def _stamp(path: Path) -> tuple[int, int]:
    try:
        st = path.stat()
    except OSError:
        return (0, 0)
    return (st.st_mtime_ns, st.st_size)


def _fits(data: SplitTensors, device: torch.device) -> bool:
    """Whether a split may live on the GPU: at most half of the memory still free there."""
    free, _ = torch.cuda.mem_get_info(device)
    return data.nbytes() * 2 <= free * 0.5  # x2: room for the frames at an evaluation size


def audio_windows(data: SplitTensors, rows: torch.Tensor, centre: torch.Tensor, samples: int,
                  sample_rate: int) -> torch.Tensor:
    """``samples`` of each clip ``rows`` around ``centre`` seconds (float64), zero-padded past the end:
    ``data.audio.crop_window`` for a whole batch. The windows are rows of one strided view of the
    audio (``unfold``), so the batch is one copy. Returns float32 ``(B, samples)``."""
    length = data.audio_length[rows]
    start = torch.round(centre * sample_rate).long() - samples // 2
    start = torch.minimum(start.clamp(min=0), (length - samples).clamp(min=0))
    first = (data.audio_start[rows] + start).clamp(max=len(data.audio) - samples)  # the audio ends in silence
    wave = data.audio.unfold(0, samples, 1)[first]
    wave = wave.float() / PCM16 if wave.dtype == torch.int16 else wave.float()
    past_end = torch.arange(samples, device=rows.device) >= (length - start)[:, None]  # a clip shorter than a window
    return wave.masked_fill_(past_end, 0.0)


__all__ = ["ClipStore", "SplitTensors", "load_split", "box_masks", "nearest_rows", "audio_windows", "PCM16"]
