"""Stage-one model and objective on tiny hand-made inputs."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from dsol_lite.errors import ConfigError
from dsol_lite.models import BackbonePair, DSOLStageOne, ResNet18Trunk
from dsol_lite.models.backbones import tile_2x2, untile_2x2
from dsol_lite.models.dsol import StageOneOutput
from dsol_lite.objectives import negative_partners, stage_one_loss


def tiny_model(k: int = 3) -> DSOLStageOne:
    torch.manual_seed(0)
    return DSOLStageOne(BackbonePair(width=8), num_clusters=k, embed_dim=4)


def test_backbone_shapes_follow_dsol():
    pair = BackbonePair(width=8)
    assert pair.visual(torch.randn(2, 3, 224, 224)).shape == (2, 64, 14, 14)  # layer4 not downsampled
    assert pair.audio(torch.randn(2, 1, 201, 64)).shape == (2, 64)


def test_width_64_is_torchvision_resnet18_and_loads_its_weights():
    import torchvision

    reference = torchvision.models.resnet18()
    trunk = ResNet18Trunk(3, 64)
    trunk.load_torchvision(reference.state_dict())
    x = torch.randn(1, 3, 64, 64)
    reference.eval(), trunk.eval()
    body = torch.nn.Sequential(*list(reference.children())[:-2])
    torch.testing.assert_close(trunk(x), body(x))
    audio = ResNet18Trunk(1, 64)
    audio.load_torchvision(reference.state_dict())  # the RGB stem is averaged to one channel
    torch.testing.assert_close(audio.conv1.weight, reference.conv1.weight.mean(1, keepdim=True))
    with pytest.raises(ConfigError, match="need width 64"):
        ResNet18Trunk(3, 16).load_torchvision(reference.state_dict())


def hand_output(v: torch.Tensor, a: torch.Tensor) -> StageOneOutput:
    return StageOneOutput(v_fea=torch.zeros(v.shape[0], 1, *v.shape[2:]), v_emb=v, a_fea=torch.zeros(a.shape[0], 1),
                          a_emb=a)


def test_loss_matches_a_hand_computation():
    model = tiny_model()
    # two clips, 1 x 2 maps, 2-d unit embeddings
    v = torch.tensor([[[[1.0, 0.0]], [[0.0, 1.0]]],    # frame 0: location 0 points along e1, location 1 along e2
                      [[[0.0, -1.0]], [[1.0, 0.0]]]])  # frame 1: e2 at location 0, -e1 at location 1
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])          # audio 0 = e1, audio 1 = e2
    with torch.no_grad():
        model.scale.fill_(5.0)
    loss, stats = stage_one_loss(model, hand_output(v, a))
    # positives: max cos(frame0, a0) = 1, max cos(frame1, a1) = 1; negatives (partner = next clip):
    # audio 0 with frame 1: cos = [0, -1] -> max 0; audio 1 with frame 0: cos = [0, 1] -> max 1
    logits = torch.tensor([5.0, 5.0, 0.0, 5.0])
    targets = torch.tensor([1.0, 1.0, 0.0, 0.0])
    p = torch.sigmoid(logits)
    expected = -(targets * torch.log(p) + (1 - targets) * torch.log(1 - p)).mean()
    assert math.isclose(loss.item(), expected.item(), rel_tol=1e-6)
    assert stats["match_acc"] == 0.75 and stats["negatives"] == 2


def test_gradients_reach_both_streams_and_the_scale():
    model = tiny_model()
    images, spec = torch.randn(4, 3, 64, 64), torch.randn(4, 1, 201, 64)
    loss, _ = stage_one_loss(model, model.encode(images, spec))
    loss.backward()
    for name in ("backbones.visual_net.conv1.weight", "backbones.audio_net.conv1.weight", "v_proj.0.weight",
                 "a_proj.0.weight", "scale"):
        grad = dict(model.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name


def test_one_visual_forward_per_batch():
    model = tiny_model()
    calls = []
    model.backbones.visual_net.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    stage_one_loss(model, model.encode(torch.randn(6, 3, 64, 64), torch.randn(6, 1, 201, 64)))[0].backward()
    assert calls == [6]


def test_negative_partners():
    assert negative_partners(4).tolist() == [1, 2, 3, 0]  # each audio used twice
    labels = torch.tensor([0, 0, 1, 1])
    assert negative_partners(4, labels, avoid_same_class=True).tolist() == [2, 2, 0, 0]
    assert negative_partners(3, torch.tensor([2, 2, 2]), avoid_same_class=True).tolist() == [-1, -1, -1]
    with pytest.raises(ValueError, match="at least 2"):
        negative_partners(1)


def test_map_is_sigmoid_of_scaled_cosine_and_scale_starts_at_five():
    model = tiny_model()
    assert model.scale.item() == 5.0
    out = model.encode(torch.randn(2, 3, 64, 64), torch.randn(2, 1, 201, 64))
    cos = F.cosine_similarity(out.v_emb, out.a_emb[:, :, None, None], dim=1)
    torch.testing.assert_close(model.localization_map(out), torch.sigmoid(5 * cos))


def test_all_negatives_equals_a_naive_loop_and_one_negative_is_dsol():
    model = tiny_model()
    torch.manual_seed(1)
    out = model.encode(torch.randn(3, 3, 64, 64), torch.randn(3, 1, 201, 64))
    s = model.scale
    pos, neg = [], []
    for i in range(3):  # audio i
        for j in range(3):  # frame j
            logit = (s * (out.v_emb[j] * out.a_emb[i][:, None, None]).sum(0)).max()
            (pos if i == j else neg).append(logit)
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    pos, neg = torch.stack(pos), torch.stack(neg)
    expected = 0.5 * (bce(pos, torch.ones(3)) + bce(neg, torch.zeros(6)))
    loss, stats = stage_one_loss(model, out, negatives="all")
    torch.testing.assert_close(loss, expected)
    assert stats["negatives"] == 6
    # one negative per audio: frame i+1 with audio i, the plain mean of DSOL's doubled batch
    one = torch.stack([neg[0], neg[3], neg[4]])  # (a0, f1), (a1, f2), (a2, f0) in loop order
    dsol = bce(torch.cat([pos, one]), torch.cat([torch.ones(3), torch.zeros(3)]))
    torch.testing.assert_close(stage_one_loss(model, out)[0], dsol)
    with pytest.raises(ValueError, match="negatives="):
        stage_one_loss(model, out, negatives="some")


def test_a_mosaic_tiles_four_frames_and_cuts_the_map_back_into_their_quadrants():
    x = torch.arange(8 * 2 * 3 * 5, dtype=torch.float32).view(8, 2, 3, 5)
    tiled = tile_2x2(x)
    assert tiled.shape == (2, 2, 6, 10)
    assert torch.equal(tiled[1, :, :3, 5:], x[5]) and torch.equal(tiled[1, :, 3:, :5], x[6])  # top right, bottom left
    assert torch.equal(untile_2x2(tiled), x)
    with pytest.raises(ValueError, match="multiple of 4"):
        tile_2x2(x[:6])
    with pytest.raises(ValueError, match="even sides"):
        untile_2x2(torch.zeros(1, 2, 5, 4))

    model = tiny_model().eval()
    images, mel = torch.randn(8, 3, 64, 64), torch.randn(8, 1, 201, 64)
    calls = []
    model.backbones.visual_net.register_forward_hook(lambda m, i, o: calls.append(tuple(i[0].shape)))
    with torch.no_grad():
        mosaic, alone = model.encode(images, mel, mosaic=True), model.encode(images, mel)
        picture = model.backbones.visual(tile_2x2(images))
    assert calls[0] == (2, 3, 128, 128)  # one visual forward of two pictures
    assert mosaic.v_fea.shape == alone.v_fea.shape == (8, 64, 4, 4)  # each frame fills whole cells
    assert torch.equal(mosaic.v_fea[5], picture[1, :, :4, 4:])  # frame 5: the second picture's top right
    assert torch.equal(mosaic.a_emb, alone.a_emb)  # the audio stream does not care
    # a cell sees across the seam: the quadrant maps differ from the frames seen alone
    assert not torch.allclose(mosaic.v_fea, alone.v_fea, atol=1e-3)
