"""Datasets over the shared on-disk layout: single-source pairs and multi-source scenes.

Notebook: 00_setup_and_data.

A dataset is a view of a ``ClipStore`` (``data.store``): the clips of one split and some kinds,
decoded once. ``batch(indices)`` makes a whole batch by indexing the store's tensors on the device,
and ``dataset[i]`` is the batch of that one item, on the CPU. Items are dicts of fixed-shape
tensors; audio comes as a 1-s waveform window around the frame (``data.audio.LogMel`` turns a
batch of them into log-mel images on the device).

Training items are random (frame choice, audio shift, crop, flip, colour) but reproducible: every
draw of item ``i`` in epoch ``e`` is a function of ``(seed, e, i)`` (``data.augment``), whatever
the batch, the number of processes, or a resume. Evaluation items are fixed: the middle frame
resized to ``image_size``, the audio window centred on it, and the ground-truth masks drawn at
``image_size``. ``prepared=PATH`` reads the clips from a prepared cache (``data.prepared``)
instead of decoding the files.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import Dataset

from dsol_lite.data.audio import AudioConfig
from dsol_lite.data.audio_augment import OFF_CLIP, OFF_ON, OFF_TIME, AudioAugment, add_noise, add_offscreen, noise_draws
from dsol_lite.data.augment import (FRAME, SHIFT, augment_images, augment_masks, augmentation_params,
                                    item_uniforms, normalize)
from dsol_lite.data.schema import ClipAnnotation, FrameAnnotation
from dsol_lite.data.store import ClipStore, audio_windows, box_masks
from dsol_lite.errors import DataError

SINGLE_SOURCE_KINDS = ("solo",)
MULTI_SOURCE_KINDS = ("duet", "cocktail", "grid2x2")


class ClipDataset(Dataset):
    """Clips of some kinds from one split of a store; see the module docstring.

    ``root`` is a dataset folder (its store on ``device`` is opened, or shared if open) or a
    ``ClipStore``. ``device``: where batches are made (default: the store's). ``masks=False``
    leaves the ground-truth masks out of batches (training does not need them). ``audio_augment``:
    background noise and off-screen sound for training items (``data.audio_augment``; off by default)."""

    def __init__(self, root: str | Path | ClipStore, split: str, kinds: tuple[str, ...], image_size: int = 128,
                 train: bool = False, audio: AudioConfig = AudioConfig(), max_shift: float = 0.25, seed: int = 0,
                 prepared: str | Path | None = None, device: torch.device | str | None = None,
                 masks: bool = True, audio_augment: AudioAugment = AudioAugment()) -> None:
        self.store = ClipStore.open(root, prepared, image_size, device or "cpu")
        self.manifest = self.store.manifest
        if audio.sample_rate != self.manifest.sample_rate:
            raise DataError(self.manifest.root, f"dataset audio is {self.manifest.sample_rate} Hz but the audio "
                                                f"config asks for {audio.sample_rate} Hz")
        self.entries = self.manifest.select(split, kinds)
        if not self.entries:
            raise DataError(self.manifest.root, f"no {'/'.join(kinds)} clips in split {split!r}")
        self.data = self.store.split(split)
        rows = [self.data.row[e.clip_id] for e in self.entries]
        self.clips: list[ClipAnnotation] = [self.data.clips[r] for r in rows]
        self.rows = torch.tensor(rows, dtype=torch.long, device=self.data.frames.device)
        self.classes = self.manifest.classes
        self.split, self.train, self.image_size, self.audio_cfg = split, train, image_size, audio
        self.max_shift = max_shift if train else 0.0
        self.seed, self.epoch, self.masks = seed, 0, masks
        self.audio_augment = audio_augment
        self.device = torch.device(device) if device is not None else self.store.device

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose random draws training items use (call before iterating)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        if not -len(self) <= i < len(self):
            raise IndexError(f"item {i} of a dataset of {len(self)}")
        return {k: v[0].cpu() for k, v in self.batch([i % len(self)]).items()}

    def draws(self, index: torch.Tensor) -> torch.Tensor:
        """The uniforms of the training items ``index`` in the current epoch (``data.augment``)."""
        return item_uniforms(self.seed, self.epoch, index)

    def frame_rows(self, index: torch.Tensor, u: torch.Tensor | None) -> torch.Tensor:
        """The store row of each item's frame: a random one in training, else the middle one."""
        rows = self.rows[index]
        count = self.data.frame_count[rows]
        k = torch.floor(u[:, FRAME] * count).long().clamp(max=count - 1) if u is not None else count // 2
        return self.data.frame_start[rows] + k

    def frame_of(self, i: int) -> FrameAnnotation:
        """The annotation of the frame item ``i`` shows (random in training, the middle one otherwise)."""
        index = torch.tensor([i], device=self.rows.device)
        first = int(self.data.frame_start[self.rows[i]])
        return self.clips[i].frames[int(self.frame_rows(index, self.draws(index) if self.train else None)) - first]

    def batch(self, indices) -> dict[str, torch.Tensor]:
        """Items ``indices`` as one batch on ``self.device``, made by indexing the store (no loop)."""
        data, dev = self.data, self.data.frames.device
        index = torch.as_tensor(indices, dtype=torch.long).to(dev, non_blocking=True)
        u = self.draws(index) if self.train else None
        rows, frames = self.rows[index], self.frame_rows(index, u)
        centre = data.frame_time[frames] + (self.max_shift * (2 * u[:, SHIFT] - 1) if u is not None else 0.0)
        audio = audio_windows(data, rows, centre, self.audio_cfg.window_samples, self.audio_cfg.sample_rate)
        if self.train and self.audio_augment.active:
            audio = self.augment_audio(audio, index, rows)
        out = {"audio": audio, "index": index, "annotated": data.annotated[frames]}
        boxes = data.boxes[frames]
        if self.train:
            params = augmentation_params(u, data.frame_size).to(self.device)
            out["image"] = augment_images(data.frames[frames].to(self.device, non_blocking=True), params,
                                          self.image_size)
            size = data.frame_size
        else:
            out["image"] = normalize(self.store.sized(self.split, self.image_size)[frames].to(self.device,
                                                                                             non_blocking=True))
            size = self.image_size
        out |= self.targets(rows, boxes, data.frame_wh[frames], data.norm_boxes[frames], size if self.masks else 0)
        if self.train and self.masks:
            for key in ("gt_mask", "class_boxes"):
                if key in out:
                    out[key] = augment_masks(out[key].to(self.device), params, self.image_size)
        return {k: v.to(self.device, non_blocking=True) for k, v in out.items()}

    def augment_audio(self, audio: torch.Tensor, index: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """Training windows with an off-screen instrument and then noise mixed in (``audio_augment``)."""
        aug, data, cfg = self.audio_augment, self.data, self.audio_cfg
        u = noise_draws(self.seed, self.epoch, index)
        if aug.offscreen_prob > 0:
            other = self.rows[(u[:, OFF_CLIP] * len(self)).long().clamp(max=len(self) - 1)]
            centre = u[:, OFF_TIME] * data.audio_length[other].double() / cfg.sample_rate
            window = audio_windows(data, other, centre, cfg.window_samples, cfg.sample_rate)
            on = (u[:, OFF_ON] < aug.offscreen_prob) & (data.label[other] != data.label[rows])
            audio = add_offscreen(audio, window, on, u)
        if aug.noise_prob > 0:
            audio = add_noise(audio, u, aug.noise_prob, self.seed, self.epoch, index, aug.snr_db)
        return audio

    def targets(self, rows: torch.Tensor, boxes: torch.Tensor, frame_wh: torch.Tensor, norm_boxes: torch.Tensor,
                size: int) -> dict[str, torch.Tensor]:
        """What an item says besides its image and audio (each dataset kind defines it); masks at
        ``size`` x ``size`` pixels (``store.box_masks``), none when ``size`` is 0."""
        raise NotImplementedError(f"{type(self).__name__} does not define targets()")

    def class_index(self, label: str) -> int:
        return self.classes.index(label)


class SoloPairs(ClipDataset):
    """Single-source (image, audio) pairs. Notebook: 00_setup_and_data, 01_correspondence.

    Item: ``image`` (3, S, S) float32 normalised; ``audio`` (window,) float32; ``label`` int64
    class of the sounding object; ``gt_mask`` (S, S) float32, union of the sounding boxes
    (zeros when the frame is unannotated, see ``annotated``); ``index`` int64.
    """

    def __init__(self, root: str | Path | ClipStore, split: str = "train",
                 kinds: tuple[str, ...] = SINGLE_SOURCE_KINDS, **kwargs) -> None:
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

    def labels(self):
        """The class index of every clip's sounding object, in dataset order (a NumPy array)."""
        return self.data.label[self.rows].cpu().numpy()

    def targets(self, rows, boxes, frame_wh, norm_boxes, size):
        out = {"label": self.data.label[rows]}
        if size:
            sounding = boxes.clone()
            sounding[..., 4] = torch.where(boxes[..., 5] > 0, boxes[..., 4], -1)  # silent boxes are no target
            out["gt_mask"] = box_masks(sounding, frame_wh, size, norm_boxes).any(1).float()
        return out


class MultiSourceScenes(ClipDataset):
    """Multi-source scenes (duet, cocktail, 2x2). Notebook: 00_setup_and_data, 04_stage_two.

    Item: ``image``, ``audio`` as in SoloPairs; ``sounding`` (K,) float32 multi-hot of the classes
    heard from on-screen objects; ``present`` (K,) multi-hot of the classes in view (sounding or
    silent; equals ``sounding`` for real data, which boxes only sounding objects);
    ``class_boxes`` (K, S, S) float32, per class the union of its objects' boxes; ``index``.
    """

    def __init__(self, root: str | Path | ClipStore, split: str = "test",
                 kinds: tuple[str, ...] = MULTI_SOURCE_KINDS, **kwargs) -> None:
        super().__init__(root, split, kinds, **kwargs)

    def targets(self, rows, boxes, frame_wh, norm_boxes, size):
        k = len(self.classes)
        onehot = torch.nn.functional.one_hot(boxes[..., 4].clamp(min=0), k) * (boxes[..., 4, None] >= 0)  # (B, M, K)
        out = {"sounding": self.data.sounding[rows], "present": (onehot.sum(1) > 0).float()}
        if size:
            masks = box_masks(boxes, frame_wh, size, norm_boxes).float()  # (B, M, S, S)
            out["class_boxes"] = (torch.einsum("bmk,bmhw->bkhw", onehot.float(), masks) > 0).float()
        return out


__all__ = ["ClipDataset", "SoloPairs", "MultiSourceScenes", "SINGLE_SOURCE_KINDS", "MULTI_SOURCE_KINDS"]
