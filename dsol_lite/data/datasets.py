"""Torch datasets over the shared on-disk layout: single-source pairs and multi-source scenes.

Notebook: 00_setup_and_data.

Items are dicts of fixed-shape tensors, so the default collate function batches them. Audio
comes back as a 1-s waveform window around the frame; turn batches of waveforms into log-mel
images on the training device with ``data.audio.LogMel`` (it runs batched on any device).

Training items are random (frame choice, audio shift, crop, flip, colour) but reproducible:
item ``i`` in epoch ``e`` draws from a generator seeded by ``(seed, e, i)``, whatever the
number of loader workers and after a resume. ``cache=True`` keeps decoded frames and audio in
memory, shared by every dataset of the process (``DECODED``; quick-mode worlds fit in a few hundred
MB): a training set, its feature set and the next run decode each file once. ``prepared=PATH``
reads frames and audio from a prepared cache (``data.prepared``, built once with ``dsol-lite
cache``) instead of decoding files: the same items, with frames already at training resolution.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2

from dsol_lite.data.audio import AudioConfig, crop_window, load_audio
from dsol_lite.data.augment import draw_augmentation
from dsol_lite.data.images import box_mask, image_transform, load_image
from dsol_lite.data.prepared import open_cache
from dsol_lite.data.schema import ClipAnnotation, FrameAnnotation, read_clip, read_manifest
from dsol_lite.errors import DataError

SINGLE_SOURCE_KINDS = ("solo",)
MULTI_SOURCE_KINDS = ("duet", "cocktail", "grid2x2")

class DecodedFiles:
    """Decoded frames and waveforms kept for every dataset of the process made with ``cache=True``,
    the least recently used dropped beyond ``limit_bytes``. A key holds the file's modification time
    and size, so a rewritten file is decoded again."""

    def __init__(self, limit_bytes: int = 3 * 2 ** 30) -> None:
        self.limit_bytes, self.nbytes = limit_bytes, 0
        self._arrays: OrderedDict[tuple, np.ndarray] = OrderedDict()

    def get(self, path: Path, how: tuple, load: Callable[[], np.ndarray]) -> np.ndarray:
        """``load()``'s result for ``path`` decoded ``how`` (a size, a sample rate)."""
        try:
            st = path.stat()
        except OSError:
            return load()  # missing: load() says so, naming the file
        key = (str(path), st.st_mtime_ns, st.st_size, how)
        if key in self._arrays:
            self._arrays.move_to_end(key)
            return self._arrays[key]
        array = self._arrays[key] = load()
        self.nbytes += array.nbytes
        while self.nbytes > self.limit_bytes and len(self._arrays) > 1:
            self.nbytes -= self._arrays.popitem(last=False)[1].nbytes
        return array

    def clear(self) -> None:
        self._arrays.clear()
        self.nbytes = 0


DECODED = DecodedFiles()  # DECODED.clear() frees the memory


class ClipDataset(Dataset):
    """Clips of some kinds from one split; annotations are read and checked up front."""

    def __init__(self, root: str | Path, split: str, kinds: tuple[str, ...], image_size: int = 128,
                 train: bool = False, audio: AudioConfig = AudioConfig(), max_shift: float = 0.25,
                 seed: int = 0, cache: bool = False, prepared: str | Path | None = None,
                 device_augment: bool = False) -> None:
        self.manifest = read_manifest(root)
        self.entries = self.manifest.select(split, kinds)
        if not self.entries:
            raise DataError(self.manifest.root, f"no {'/'.join(kinds)} clips in split {split!r}")
        if audio.sample_rate != self.manifest.sample_rate:
            raise DataError(self.manifest.root, f"dataset audio is {self.manifest.sample_rate} Hz but the audio "
                                                f"config asks for {audio.sample_rate} Hz")
        self.clips: list[ClipAnnotation] = [read_clip(self.manifest, e.clip_id) for e in self.entries]
        self.classes = self.manifest.classes
        self.split, self.train, self.image_size, self.audio_cfg = split, train, image_size, audio
        self.max_shift = max_shift if train else 0.0
        # device_augment: training items stay uint8 and carry their augmentation's parameters,
        # applied to the whole batch on the device (data.augment); evaluation items are unchanged
        self.device_augment = device_augment and train
        self.transform = image_transform(image_size, train and not self.device_augment)
        self.seed, self.epoch = seed, 0
        self.cache = cache and prepared is None
        self.prepared = open_cache(prepared, self.manifest, image_size) if prepared is not None else None

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose random draws training items use (call before iterating)."""
        self.epoch = epoch

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        if not self.train:
            return self.item(i)
        with torch.random.fork_rng(devices=[]):  # leaves the caller's random state untouched
            state = np.random.SeedSequence((self.seed, self.epoch, i)).generate_state(1)[0]
            torch.default_generator.manual_seed(int(state))
            out = self.item(i)
            if self.device_augment:
                out["augment"] = draw_augmentation(self.image_size)
            return out

    def item(self, i: int) -> dict[str, torch.Tensor]:
        """Item ``i`` (drawing from the global torch RNG); each dataset kind defines it."""
        raise NotImplementedError(f"{type(self).__name__} does not define item()")

    def _cached(self, path: Path, how: tuple, load: Callable[[], np.ndarray]) -> np.ndarray:
        return DECODED.get(path, how, load) if self.cache else load()

    def __len__(self) -> int:
        return len(self.clips)

    def frame_of(self, i: int) -> FrameAnnotation:
        """Training draws any frame; evaluation always uses the middle one (never random)."""
        frames = self.clips[i].frames
        k = int(torch.randint(len(frames), ())) if self.train else len(frames) // 2
        return frames[k]

    def load_frame(self, i: int, frame: FrameAnnotation) -> np.ndarray:
        if self.prepared is not None:
            return self.prepared.frame(self.clips[i].clip_id, self.clips[i].frames.index(frame))
        path = self.manifest.clip_dir(self.clips[i].clip_id) / frame.file
        size = (frame.width, frame.height)
        return self._cached(path, size, lambda: load_image(path, size))

    def load_waveform(self, i: int) -> np.ndarray:
        if self.prepared is not None:
            return self.prepared.waveform(self.clips[i].clip_id)
        clip = self.clips[i]
        path = self.manifest.clip_dir(clip.clip_id) / clip.audio
        return self._cached(path, (self.audio_cfg.sample_rate, clip.num_samples), lambda: self._read_waveform(i))

    def _read_waveform(self, i: int) -> np.ndarray:
        clip = self.clips[i]
        path = self.manifest.clip_dir(clip.clip_id) / clip.audio
        wave = load_audio(path, self.audio_cfg.sample_rate)
        if abs(len(wave) - clip.num_samples) > self.audio_cfg.sample_rate // 100:
            raise DataError(path, f"holds {len(wave)} samples but its annotation says {clip.num_samples}")
        return wave

    def audio_window(self, i: int, frame: FrameAnnotation) -> torch.Tensor:
        shift = float(torch.empty(()).uniform_(-self.max_shift, self.max_shift)) if self.max_shift else 0.0
        window = crop_window(self.load_waveform(i), self.audio_cfg.sample_rate, frame.time,
                             self.audio_cfg.window_seconds, shift)
        return torch.from_numpy(window)

    def class_index(self, label: str) -> int:
        return self.classes.index(label)

    def _image_and_masks(self, i: int, frame: FrameAnnotation, masks: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Transform the frame and a stack of (C, H, W) masks with the same geometry."""
        image = tv_tensors.Image(torch.from_numpy(self.load_frame(i, frame)).permute(2, 0, 1))
        masks_t = torch.from_numpy(masks.astype(np.uint8))
        if masks_t.shape[-2:] != image.shape[-2:]:  # a cached frame is already at training size
            masks_t = F.interpolate(masks_t[None], size=image.shape[-2:], mode="nearest-exact")[0]
        if self.device_augment:  # uint8 at training size; crop, flip and jitter come later, per batch
            size = (self.image_size, self.image_size)
            if image.shape[-2:] != size:
                image = v2.functional.resize(image, list(size), antialias=True)
                masks_t = F.interpolate(masks_t[None], size=size, mode="nearest-exact")[0]
            return image.as_subclass(torch.Tensor).contiguous(), masks_t.float()
        image, masks_t = self.transform(image, tv_tensors.Mask(masks_t))
        return image.as_subclass(torch.Tensor), masks_t.as_subclass(torch.Tensor).float()


class SoloPairs(ClipDataset):
    """Single-source (image, audio) pairs. Notebook: 00_setup_and_data, 01_correspondence.

    Item: ``image`` (3, S, S) float32 normalised; ``audio`` (window,) float32; ``label`` int64
    class of the sounding object; ``gt_mask`` (S, S) float32, union of the sounding boxes
    (zeros when the frame is unannotated, see ``annotated``); ``index`` int64.
    """

    def __init__(self, root: str | Path, split: str = "train", kinds: tuple[str, ...] = SINGLE_SOURCE_KINDS,
                 **kwargs) -> None:
        super().__init__(root, split, kinds, **kwargs)
        for clip in self.clips:
            if sum(s.on_screen for s in clip.sources) != 1:
                raise DataError(self.manifest.clip_dir(clip.clip_id),
                                f"a single-source clip needs exactly one on-screen source, has "
                                f"{[s.label for s in clip.sources if s.on_screen]}")

    @staticmethod
    def sounding_label(clip: ClipAnnotation) -> str:
        """The class of the clip's one on-screen sound source."""
        return next(s.label for s in clip.sources if s.on_screen)

    def labels(self) -> np.ndarray:
        """The class index of every clip's sounding object, in dataset order."""
        return np.array([self.class_index(self.sounding_label(c)) for c in self.clips])

    def item(self, i: int) -> dict[str, torch.Tensor]:
        clip, frame = self.clips[i], self.frame_of(i)
        label = self.sounding_label(clip)
        gt = box_mask([o.box for o in frame.sounding_objects()], frame.height, frame.width)
        image, gt_t = self._image_and_masks(i, frame, gt[None])
        return {"image": image, "audio": self.audio_window(i, frame), "label": torch.tensor(self.class_index(label)),
                "gt_mask": gt_t[0], "annotated": torch.tensor(frame.objects is not None),
                "index": torch.tensor(i)}


class MultiSourceScenes(ClipDataset):
    """Multi-source scenes (duet, cocktail, 2x2). Notebook: 00_setup_and_data, 04_stage_two.

    Item: ``image``, ``audio`` as in SoloPairs; ``sounding`` (K,) float32 multi-hot of the classes
    heard from on-screen objects; ``present`` (K,) multi-hot of the classes in view (sounding or
    silent; equals ``sounding`` for real data, which boxes only sounding objects);
    ``class_boxes`` (K, S, S) float32, per class the union of its objects' boxes; ``index``.
    """

    def __init__(self, root: str | Path, split: str = "test", kinds: tuple[str, ...] = MULTI_SOURCE_KINDS,
                 **kwargs) -> None:
        super().__init__(root, split, kinds, **kwargs)

    def item(self, i: int) -> dict[str, torch.Tensor]:
        clip, frame = self.clips[i], self.frame_of(i)
        K = len(self.classes)
        sounding, present = torch.zeros(K), torch.zeros(K)
        for s in clip.sources:
            if s.on_screen:
                sounding[self.class_index(s.label)] = 1
        boxes = np.zeros((K, frame.height, frame.width), bool)
        for o in frame.objects or ():
            k = self.class_index(o.label)
            present[k] = 1
            boxes[k] |= box_mask([o.box], frame.height, frame.width)
        image, boxes_t = self._image_and_masks(i, frame, boxes)
        return {"image": image, "audio": self.audio_window(i, frame), "sounding": sounding, "present": present,
                "class_boxes": boxes_t, "annotated": torch.tensor(frame.objects is not None),
                "index": torch.tensor(i)}
