"""The clip store: decoded once, exactly what the file loaders give, and batches made by indexing it
that equal the per-item path for the same draws."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import torch
from torchvision import tv_tensors

from dsol_lite.data.audio import crop_window, load_audio
from dsol_lite.data.augment import FRAME, SHIFT, augment_images, augmentation_params, item_uniforms
from dsol_lite.data.datasets import MultiSourceScenes, SoloPairs
from dsol_lite.data.images import box_mask, image_transform, load_image
from dsol_lite.data.prepared import build_cache
from dsol_lite.data.schema import read_manifest
from dsol_lite.data.store import ClipStore, box_masks
from dsol_lite.pipeline import run_pipeline
from dsol_lite.stage_one import STAGE_ONE_PRESETS
from dsol_lite.stage_two import STAGE_TWO_PRESETS


def test_the_store_holds_exactly_what_the_file_loaders_read(tiny_world):
    store = ClipStore(read_manifest(tiny_world))
    for split in ("train", "test"):
        data = store.split(split)
        assert data.frames.dtype == torch.uint8 and data.audio.dtype == torch.int16  # the world's 16-bit audio
        classes = store.manifest.classes
        for row in range(0, len(data.clips), 7):
            clip = data.clips[row]
            folder = store.manifest.clip_dir(clip.clip_id)
            start, n = int(data.audio_start[row]), int(data.audio_length[row])
            wave = torch.from_numpy(load_audio(folder / clip.audio))
            assert torch.equal(data.audio[start:start + n].float() / 32768, wave)
            heard = {classes.index(s.label) for s in clip.sources if s.on_screen}
            assert set(torch.nonzero(data.sounding[row])[:, 0].tolist()) == heard
            assert int(data.label[row]) == (next(iter(heard)) if len(heard) == 1 else -1)
            for k, frame in enumerate(clip.frames):
                f = int(data.frame_start[row]) + k
                image = torch.from_numpy(load_image(folder / frame.file)).permute(2, 0, 1)
                assert torch.equal(data.frames[f], image)
                assert float(data.frame_time[f]) == frame.time
                boxes = [b for b in data.boxes[f].tolist() if b[4] >= 0]
                assert boxes == [[*o.box, classes.index(o.label), int(o.sounding)] for o in frame.objects]
                raster = box_masks(data.boxes[f:f + 1], data.frame_wh[f:f + 1], frame.width)[0].any(0)
                assert torch.equal(raster, torch.from_numpy(box_mask([o.box for o in frame.objects], frame.height,
                                                                     frame.width)))


def test_a_prepared_cache_loads_into_the_same_store(tiny_world, tmp_path):
    size = read_manifest(tiny_world).clips and 160
    cache = build_cache(tiny_world, tmp_path / "cache", size, progress=False)
    files, cached = ClipStore(read_manifest(tiny_world)), ClipStore(read_manifest(tiny_world), cache, size)
    a, b = files.split("val"), cached.split("val")
    for name in ("frames", "audio", "boxes", "frame_wh", "frame_time", "sounding", "label"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    x = MultiSourceScenes(files, "val", image_size=96)
    y = MultiSourceScenes(cached, "val", image_size=96)
    assert torch.equal(x.batch([0, 1])["class_boxes"], y.batch([0, 1])["class_boxes"])  # masks: one rule


def test_evaluation_batches_equal_the_per_item_transforms(tiny_world):
    data = SoloPairs(tiny_world, "test", image_size=128)
    scenes = MultiSourceScenes(tiny_world, "test", image_size=96)
    transform = image_transform(128, False)
    batch = data.batch(list(range(6)))
    for i in range(6):
        clip = data.clips[i]
        frame = clip.frames[len(clip.frames) // 2]
        folder = data.manifest.clip_dir(clip.clip_id)
        gt = box_mask([o.box for o in frame.sounding_objects()], frame.height, frame.width)
        image, mask = transform(tv_tensors.Image(torch.from_numpy(load_image(folder / frame.file)).permute(2, 0, 1)),
                                tv_tensors.Mask(torch.from_numpy(gt[None].astype(np.uint8))))
        assert (batch["image"][i] - image).abs().max() < 1e-5
        assert torch.equal(batch["gt_mask"][i], mask[0].float())
        audio = crop_window(load_audio(folder / clip.audio), 16000, frame.time)
        assert torch.equal(batch["audio"][i], torch.from_numpy(audio))
    item = scenes[3]
    frame = scenes.clips[3].frames[0]
    resize = image_transform(96, False)
    for k, name in enumerate(scenes.classes):
        boxes = box_mask([o.box for o in frame.objects if o.label == name], frame.height, frame.width)
        _, mask = resize(tv_tensors.Image(torch.zeros(3, frame.height, frame.width, dtype=torch.uint8)),
                         tv_tensors.Mask(torch.from_numpy(boxes[None].astype(np.uint8))))
        assert torch.equal(item["class_boxes"][k], mask[0].float()), name


def test_training_batches_equal_the_per_item_path_for_the_same_draws(tiny_world):
    data = SoloPairs(tiny_world, "train", image_size=64, train=True, seed=5)
    data.set_epoch(3)
    picks = [4, 0, 11, 7]
    batch = data.batch(picks)
    for b, i in enumerate(picks):
        u = item_uniforms(5, 3, torch.tensor([i]))
        clip = data.clips[i]
        frame = clip.frames[min(int(float(u[0, FRAME]) * len(clip.frames)), len(clip.frames) - 1)]
        folder = data.manifest.clip_dir(clip.clip_id)
        image = torch.from_numpy(load_image(folder / frame.file)).permute(2, 0, 1)[None]
        expected = augment_images(image, augmentation_params(u, image.shape[-1]), 64)[0]
        assert torch.allclose(batch["image"][b], expected, atol=1e-6)
        shift = 0.25 * (2 * float(u[0, SHIFT]) - 1)
        audio = crop_window(load_audio(folder / clip.audio), 16000, frame.time, 1.0, shift)
        assert torch.equal(batch["audio"][b], torch.from_numpy(audio))
        assert int(batch["label"][b]) == data.classes.index(data.sounding_label(clip))


def test_stores_are_shared_and_renewed_when_the_dataset_changes(tiny_world, tmp_path):
    world = Path(shutil.copytree(tiny_world, tmp_path / "w"))
    a = SoloPairs(world, "val", image_size=64)
    assert SoloPairs(world, "test", image_size=64).store is a.store  # one store per folder
    manifest = json.loads((world / "dataset.json").read_text())
    manifest["name"] = "renamed"
    (world / "dataset.json").write_text(json.dumps(manifest))
    assert SoloPairs(world, "val", image_size=64).store is not a.store


def test_a_run_reads_the_manifest_once(tiny_world, tmp_path, monkeypatch):
    reads = []
    real = Path.read_text

    def counting(self, *args, **kwargs):
        if self.name == "dataset.json":
            reads.append(str(self))
        return real(self, *args, **kwargs)

    ClipStore.release_all()
    monkeypatch.setattr(Path, "read_text", counting)
    s1 = dataclasses.replace(STAGE_ONE_PRESETS["quick"], width=8, image_size=64, eval_size=80, epochs=2,
                             batch_size=8, class_passes=1, checkpoint_every=2)
    s2 = dataclasses.replace(STAGE_TWO_PRESETS["quick"], batch_size=8, epochs=2, warmup_epochs=1, checkpoint_every=2,
                             eval_size=96)
    run_pipeline("quick", tiny_world, tmp_path / "runs", "once", torch.device("cpu"), False, stage_one=s1, stage_two=s2)
    assert len(reads) == 1, reads
