"""Batched augmentation: the same crop, flip and jitter as torchvision's per-item ops, draws that are
a function of (seed, epoch, item) only, and training that still resumes bitwise."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from torchvision.transforms import RandomResizedCrop
from torchvision.transforms.v2 import functional as TF

from dsol_lite.data.augment import (AREA, DRAWS, RATIO, augment_images, augment_masks, augmentation_params,
                                    crop_boxes, item_uniforms)
from dsol_lite.data.datasets import MultiSourceScenes, SoloPairs
from dsol_lite.data.images import IMAGENET_MEAN, IMAGENET_STD
from dsol_lite.stage_one import STAGE_ONE_PRESETS, Interrupted, StageOneTrainer

S = 64


def torchvision_reference(image: torch.Tensor, p: list[float], out: int) -> torch.Tensor:
    """torchvision's ops on one frame (in float, so that no rounding to uint8 comes between them)."""
    top, left, h, w, flip, brightness, contrast, saturation = p
    x = TF.resized_crop(image.float(), int(top), int(left), int(h), int(w), [out, out], antialias=True) / 255
    x = TF.horizontal_flip(x) if flip > 0.5 else x
    x = TF.adjust_saturation(TF.adjust_contrast(TF.adjust_brightness(x, brightness), contrast), saturation)
    return TF.normalize(x, IMAGENET_MEAN, IMAGENET_STD)


@pytest.mark.parametrize("size, out", [(S, S), (80, S)])  # crops kept at size, and shrunk (160 -> 128 in quick)
def test_batched_ops_match_torchvision_per_item(size, out):
    torch.manual_seed(0)
    images = TF.gaussian_blur(torch.rand(6, 3, size, size) * 255, [7, 7], [2.0, 2.0]).to(torch.uint8)
    params = augmentation_params(item_uniforms(0, 0, torch.arange(6)), size)
    assert {0.0, 1.0} == set(params[:, 4].tolist())  # both flips drawn (items 0-5 of seed 0 have both)
    top, left, h, w = params[:, :4].T
    assert ((h * w) >= 0.6 * size * size * 0.95).all() and ((top + h) <= size).all() and ((left + w) <= size).all()
    ours = augment_images(images, params, out)
    for b in range(6):  # the same antialiased resampling, flip and jitter: equal to float rounding
        assert torch.allclose(ours[b], torchvision_reference(images[b], params[b].tolist(), out), atol=1e-4), b

    masks = torch.zeros(6, 2, size, size)
    masks[:, 0, 10:30, 5:20] = 1
    moved = augment_masks(masks, params, out)
    for b in range(6):
        t, lf, hh, ww, flip = params[b, :5].tolist()
        ref = TF.resized_crop(masks[b], int(t), int(lf), int(hh), int(ww), [out, out],
                              interpolation=TF.InterpolationMode.NEAREST)
        ref = ref.flip(-1) if flip > 0.5 else ref
        assert (ref != moved[b]).float().mean() < 0.03 and moved[b, 1].sum() == 0
    assert augment_masks(masks[:, 0], params, out).shape == (6, out, out)


def test_identity_parameters_only_normalise():
    images = torch.randint(0, 256, (2, 3, S, S), dtype=torch.uint8)
    identity = torch.tensor([[0, 0, S, S, 0, 1, 1, 1]] * 2, dtype=torch.float32)
    expected = TF.normalize(images.float() / 255, IMAGENET_MEAN, IMAGENET_STD)
    assert torch.allclose(augment_images(images, identity), expected, atol=1e-5)


def test_draws_are_a_function_of_seed_epoch_and_item_only():
    a = item_uniforms(3, 7, torch.tensor([0, 5, 9]))
    assert a.shape == (3, DRAWS) and a.dtype == torch.float64 and ((a > 0) & (a < 1)).all()
    assert torch.equal(item_uniforms(3, 7, torch.tensor([9, 5]))[0], a[2])  # the same item in another batch
    assert not torch.equal(item_uniforms(3, 8, torch.tensor([0]))[0], a[0])  # another epoch
    assert not torch.equal(item_uniforms(4, 7, torch.tensor([0]))[0], a[0])  # another seed
    many = item_uniforms(0, 0, torch.arange(20000))
    assert abs(float(many.mean()) - 0.5) < 0.005 and abs(float(many.std()) - 12 ** -0.5) < 0.005
    assert abs(float(torch.corrcoef(torch.stack([many[:, 0], many[:, 1]]))[0, 1])) < 0.03


def test_crops_follow_torchvisions_rule():
    u = item_uniforms(1, 2, torch.arange(4000))
    box = crop_boxes(u, 160)
    area = box[:, 2] * box[:, 3] / 160 ** 2
    assert area.min() >= 0.59 and area.max() <= 1.0 and (box[:, 0] + box[:, 2] <= 160).all()
    ratio = box[:, 3] / box[:, 2]
    assert ratio.min() >= 0.79 and ratio.max() <= 1.26
    # one item by hand: the first of the ten tries whose box fits the frame
    for b in range(20):
        for t in range(10):
            target = 160 * 160 * (0.6 + 0.4 * float(u[b, AREA + t]))
            log_lo, log_hi = math.log(0.8), math.log(1.25)
            aspect = math.exp(log_lo + (log_hi - log_lo) * float(u[b, RATIO + t]))
            w, h = round((target * aspect) ** 0.5), round((target / aspect) ** 0.5)
            if 0 < w <= 160 and 0 < h <= 160:
                assert (int(box[b, 2]), int(box[b, 3])) == (h, w), b
                break
    torchvision = torch.tensor([RandomResizedCrop.get_params(torch.empty(1, 160, 160), [0.6, 1.0], [0.8, 1.25])[2:]
                                for _ in range(4000)], dtype=torch.float32)
    assert abs(float((torchvision[:, 0] * torchvision[:, 1]).mean() / 160 ** 2) - float(area.mean())) < 0.01


def test_training_items_are_reproducible_and_independent_of_their_batch(tiny_world):
    ds = SoloPairs(tiny_world, "train", image_size=S, train=True, seed=2)
    a, b = ds[3], ds[3]
    assert a["image"].dtype == torch.float32 and a["image"].shape == (3, S, S)
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["audio"], b["audio"])
    batch = ds.batch([7, 3, 1])
    for key in a:
        assert torch.equal(batch[key][1], a[key]), key
    ds.set_epoch(1)
    assert not torch.equal(ds[3]["image"], a["image"])  # a new epoch, new draws
    scenes = MultiSourceScenes(tiny_world, "train", image_size=S, train=True)
    item = scenes[0]
    assert item["class_boxes"].shape == (8, S, S) and set(item["class_boxes"].unique().tolist()) <= {0.0, 1.0}
    assert "class_boxes" not in MultiSourceScenes(tiny_world, "train", image_size=S, train=True, masks=False)[0]


def test_stage_one_resumes_bitwise(tiny_world, tmp_path):
    cfg = dataclasses.replace(STAGE_ONE_PRESETS["quick"], width=8, image_size=S, eval_size=None, epochs=2,
                              batch_size=8, class_passes=1, checkpoint_every=2)
    ref = StageOneTrainer(tiny_world, tmp_path / "a", cfg, torch.device("cpu"), progress_bar=False)
    ref.fit()
    with pytest.raises(Interrupted):
        StageOneTrainer(tiny_world, tmp_path / "b", cfg, torch.device("cpu"), progress_bar=False).fit(interrupt_after=5)
    resumed = StageOneTrainer(tiny_world, tmp_path / "b", cfg, torch.device("cpu"), progress_bar=False)
    resumed.fit()
    for k, v in ref.model.state_dict().items():
        assert torch.equal(v, resumed.model.state_dict()[k]), k
