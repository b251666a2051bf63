"""Batched augmentation on the device: the same crop, flip and jitter as torchvision's per-item
ops, items that stay reproducible, and training that still resumes bitwise."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torchvision.transforms.v2 import functional as TF

from dsol_lite.data.augment import augment_batch, augment_images, augment_masks, draw_augmentation
from dsol_lite.data.datasets import MultiSourceScenes, SoloPairs
from dsol_lite.data.images import IMAGENET_MEAN, IMAGENET_STD
from dsol_lite.stage_one import STAGE_ONE_PRESETS, Interrupted, StageOneTrainer
from dsol_lite.training import to_device

S = 64


def torchvision_reference(image: torch.Tensor, p: list[float]) -> torch.Tensor:
    top, left, h, w, flip, brightness, contrast, saturation = p
    x = TF.resized_crop(image, int(top), int(left), int(h), int(w), [S, S], antialias=True)
    x = TF.horizontal_flip(x) if flip > 0.5 else x
    x = TF.to_dtype(x, torch.float32, scale=True)
    x = TF.adjust_saturation(TF.adjust_contrast(TF.adjust_brightness(x, brightness), contrast), saturation)
    return TF.normalize(x, IMAGENET_MEAN, IMAGENET_STD)


def test_batched_ops_match_torchvision_per_item():
    torch.manual_seed(0)
    images = TF.gaussian_blur(torch.rand(6, 3, S, S) * 255, [7, 7], [2.0, 2.0]).to(torch.uint8)
    params = torch.stack([draw_augmentation(S) for _ in range(6)])
    assert {0.0, 1.0} == set(params[:, 4].tolist())  # both flips drawn
    top, left, h, w = params[:, :4].T
    assert ((h * w) >= 0.6 * S * S * 0.95).all() and ((top + h) <= S).all() and ((left + w) <= S).all()
    ours = augment_images(images, params)
    for b in range(6):
        diff = (ours[b] - torchvision_reference(images[b], params[b].tolist())).abs()
        assert diff.mean() < 0.02 and diff.max() < 0.15, b  # roi_align vs antialiased resize

    masks = torch.zeros(6, 2, S, S)
    masks[:, 0, 10:30, 5:20] = 1
    moved = augment_masks(masks, params)
    for b in range(6):
        t, lf, hh, ww, flip = params[b, :5].tolist()
        ref = TF.resized_crop(masks[b], int(t), int(lf), int(hh), int(ww), [S, S],
                              interpolation=TF.InterpolationMode.NEAREST)
        ref = ref.flip(-1) if flip > 0.5 else ref
        assert (ref != moved[b]).float().mean() < 0.03 and moved[b, 1].sum() == 0
    assert augment_masks(masks[:, 0], params).shape == (6, S, S)


def test_identity_parameters_only_normalise():
    images = torch.randint(0, 256, (2, 3, S, S), dtype=torch.uint8)
    identity = torch.tensor([[0, 0, S, S, 0, 1, 1, 1]] * 2, dtype=torch.float32)
    expected = TF.normalize(images.float() / 255, IMAGENET_MEAN, IMAGENET_STD)
    assert torch.allclose(augment_images(images, identity), expected, atol=1e-5)


def test_items_carry_parameters_and_stay_reproducible(tiny_world):
    ds = SoloPairs(tiny_world, "train", image_size=S, train=True, device_augment=True)
    a, b = ds[3], ds[3]
    assert a["image"].dtype == torch.uint8 and a["image"].shape == (3, S, S) and a["augment"].shape == (8,)
    assert torch.equal(a["augment"], b["augment"]) and torch.equal(a["image"], b["image"])
    ds.set_epoch(1)
    assert not torch.equal(ds[3]["augment"], a["augment"])  # a new epoch, new draws
    batch = to_device({k: torch.stack([ds[i][k] for i in range(4)]) for k in a}, torch.device("cpu"))
    assert "augment" not in batch and batch["image"].dtype == torch.float32 and batch["gt_mask"].shape == (4, S, S)
    assert not SoloPairs(tiny_world, "val", image_size=S, device_augment=True).device_augment  # evaluation: never
    scenes = MultiSourceScenes(tiny_world, "train", image_size=S, train=True, device_augment=True)
    item = scenes[0]
    out = augment_batch({k: v[None] for k, v in item.items()})
    assert out["class_boxes"].shape == item["class_boxes"][None].shape


def test_stage_one_with_device_augmentation_resumes_bitwise(tiny_world, tmp_path):
    cfg = dataclasses.replace(STAGE_ONE_PRESETS["quick"], width=8, image_size=S, eval_size=None, epochs=2,
                              batch_size=8, class_passes=1, checkpoint_every=2, device_augment=True)
    ref = StageOneTrainer(tiny_world, tmp_path / "a", cfg, torch.device("cpu"), progress_bar=False)
    ref.fit()
    with pytest.raises(Interrupted):
        StageOneTrainer(tiny_world, tmp_path / "b", cfg, torch.device("cpu"), progress_bar=False).fit(interrupt_after=5)
    resumed = StageOneTrainer(tiny_world, tmp_path / "b", cfg, torch.device("cpu"), progress_bar=False)
    resumed.fit()
    for k, v in ref.model.state_dict().items():
        assert torch.equal(v, resumed.model.state_dict()[k]), k
    assert ref.ckpt.fingerprint["device_augment"] is True
    plain = dataclasses.replace(cfg, device_augment=False).fingerprint(tiny_world)
    assert "device_augment" not in plain  # runs made before the option keep their settings
