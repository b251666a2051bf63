"""The peer methods: losses against naive loops, gradient checks, the interface and the trainer."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from dsol_lite.errors import ConfigError
from dsol_lite.methods import METHODS, PEER_PRESETS, PeerConfig, PeerTrainer, get_method
from dsol_lite.models import BackbonePair
from dsol_lite.models.peers import AVGNNet, minmax, peak_relative
from dsol_lite.objectives.peers import (alignment_loss, avgn_loss, ezvsl_loss, fnac_loss, foreground_embeddings,
                                        localization_similarity, mil_logits)

torch.manual_seed(0)


def unit(*shape, dim=1, dtype=torch.float64):
    return F.normalize(torch.randn(*shape, dtype=dtype), dim=dim)


def naive_nce(sim: list[list[float]]) -> float:
    """Both directions of InfoNCE with positives on the diagonal, by hand."""
    n = len(sim)
    rows = -sum(sim[i][i] - math.log(sum(math.exp(s) for s in sim[i])) for i in range(n)) / n
    cols = -sum(sim[i][i] - math.log(sum(math.exp(sim[j][i]) for j in range(n))) for i in range(n)) / n
    return rows + cols


def test_mil_logits_and_ezvsl_match_a_naive_loop():
    v, a = unit(3, 4, 2, 2), unit(3, 4)
    sim = [[max(float(v[n, :, y, x] @ a[m]) for y in range(2) for x in range(2)) / 0.03 for m in range(3)]
           for n in range(3)]
    assert torch.allclose(mil_logits(v, a, 0.03), torch.tensor(sim, dtype=torch.float64))
    loss, stats = ezvsl_loss(v, a, 0.03)
    assert loss.item() == pytest.approx(naive_nce(sim), rel=1e-9)
    assert 0.0 <= stats["match_acc"] <= 1.0


def test_ezvsl_by_hand_on_a_two_clip_batch():
    # one location each; frame 0 matches audio 0 (cos 1) and not audio 1 (cos 0), and vice versa
    v = torch.tensor([[1.0, 0.0], [0.0, 1.0]]).view(2, 2, 1, 1)
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    loss, _ = ezvsl_loss(v, a, tau=1.0)
    expected = 2 * -math.log(math.e / (math.e + 1))  # each direction: -log(e^1 / (e^1 + e^0))
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_fnac_with_zero_weights_is_ezvsl_exactly():
    v, a = unit(5, 8, 3, 3), unit(5, 8)
    assert torch.equal(fnac_loss(v, a, 0.03, (0.0, 0.0, 0.0))[0], ezvsl_loss(v, a, 0.03)[0])


def test_fnac_terms_match_a_naive_computation():
    v, a = unit(4, 6, 3, 3), unit(4, 6)
    tau = 0.1
    logits = mil_logits(v, a, tau)

    def softmax_rows(m):
        return torch.stack([torch.exp(r) / torch.exp(r).sum() for r in m])

    aa = softmax_rows(a @ a.T / tau)
    fg = []
    for n in range(4):  # foreground by a loop: min-max normalised own map > 0.6
        own = torch.einsum("dhw,d->hw", v[n], a[n]).flatten()
        norm = (own - own.min()) / (own.max() - own.min())
        keep = [i for i in range(9) if norm[i] > 0.6 or own[i] == own.max()]
        fg.append(F.normalize(v[n].flatten(1)[:, keep].mean(1), dim=0))
    fg = torch.stack(fg)
    assert torch.allclose(foreground_embeddings(v, a, 0.6), fg)
    pooled = F.normalize(v.mean(dim=(2, 3)), dim=1)
    expected = (ezvsl_loss(v, a, tau)[0] + 1.0 * (aa - softmax_rows(logits)).abs().mean()
                + 2.0 * (aa - softmax_rows(fg @ fg.T / tau)).abs().mean()
                + 3.0 * (softmax_rows(pooled @ pooled.T / tau) - softmax_rows(logits)).abs().mean())
    assert fnac_loss(v, a, tau, (1.0, 2.0, 3.0))[0].item() == pytest.approx(expected.item(), rel=1e-9)


def test_localization_similarity_matches_a_naive_loop():
    v, a = unit(2, 4, 2, 3), unit(3, 4)
    out = localization_similarity(v, a, 0.65, 0.03)
    for n in range(2):
        for m in range(3):
            cos = [float(v[n, :, y, x] @ a[m]) for y in range(2) for x in range(3)]
            w = [1 / (1 + math.exp(-(c - 0.65) / 0.03)) for c in cos]
            assert out[n, m].item() == pytest.approx(sum(wi * c for wi, c in zip(w, cos)) / sum(w), rel=1e-9)


def test_alignment_loss_matches_a_naive_loop():
    views_v = [(unit(3, 4, 2, 2), unit(3, 4)) for _ in range(2)]
    views_a = [(unit(3, 4), unit(3, 4)) for _ in range(2)]
    loss, _ = alignment_loss(views_v, views_a, tau=0.07)
    total = 0.0
    for v_emb, v_al in views_v:
        for a_emb, a_al in views_a:
            loc = (localization_similarity(v_emb, a_emb) / 0.07).tolist()
            ali = (v_al @ a_al.T / 0.07).tolist()
            total += naive_nce(loc) / 2 + naive_nce(ali) / 2
    assert loss.item() == pytest.approx(total / 4, rel=1e-9)


def test_avgn_assignment_rows_sum_to_one_and_loss_by_hand():
    torch.manual_seed(1)
    net = AVGNNet(BackbonePair(width=4), num_classes=3, embed_dim=8, heads=2).double().eval()
    out = net.encode(torch.randn(2, 3, 64, 64, dtype=torch.float64), torch.randn(2, 1, 64, 64, dtype=torch.float64))
    assert torch.allclose(out.assign.sum(-1), torch.ones(out.assign.shape[:2], dtype=torch.float64))
    assert out.class_emb.shape == (2, 3, 8) and net.class_maps(out).shape[:2] == (2, 3)
    labels = torch.tensor([2, 0])
    loss, stats = avgn_loss(out.v_emb, out.class_emb, out.token_logits, out.presence_logits, labels, 0.03, (0.5, 2.0))
    own = out.class_emb[[0, 1], [2, 0]]
    tokens = F.cross_entropy(out.token_logits.reshape(6, 3), torch.tensor([0, 1, 2, 0, 1, 2]))
    bce = F.binary_cross_entropy_with_logits(out.presence_logits, F.one_hot(labels, 3).double())
    expected = ezvsl_loss(out.v_emb, own, 0.03)[0] + 0.5 * tokens + 2.0 * bce
    assert loss.item() == pytest.approx(expected.item(), rel=1e-9)
    maps = net.per_source_maps(torch.randn(2, 3, 64, 64, dtype=torch.float64),
                               torch.randn(2, 1, 64, 64, dtype=torch.float64), classes=F.one_hot(labels, 3))
    assert maps[0, :2].abs().sum() == 0 and maps[0, 2].max().item() == pytest.approx(1.0)


@pytest.mark.parametrize("name", ["ezvsl", "fnac", "alignment"])
def test_gradient_check(name):
    v = torch.randn(3, 4, 2, 2, dtype=torch.float64, requires_grad=True)
    a = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    if name == "ezvsl":
        def fn(v, a):
            return ezvsl_loss(F.normalize(v, dim=1), F.normalize(a, dim=1), 0.5)[0]
    elif name == "fnac":
        def fn(v, a):
            return fnac_loss(F.normalize(v, dim=1), F.normalize(a, dim=1), 0.5, (1.0, 1.0, 1.0))[0]
    else:
        def fn(v, a):
            vn, an = F.normalize(v, dim=1), F.normalize(a, dim=1)
            return alignment_loss([(vn, vn.mean(dim=(2, 3)))], [(an, an)], 0.5, 0.2, 0.3)[0]
    assert torch.autograd.gradcheck(fn, (v, a))


def test_avgn_loss_gradient_check():
    labels = torch.tensor([1, 0, 2])
    v = torch.randn(3, 4, 2, 2, dtype=torch.float64, requires_grad=True)
    cls = torch.randn(3, 3, 4, dtype=torch.float64, requires_grad=True)
    tok = torch.randn(3, 3, 3, dtype=torch.float64, requires_grad=True)
    pres = torch.randn(3, 3, dtype=torch.float64, requires_grad=True)

    def fn(v, cls, tok, pres):
        return avgn_loss(F.normalize(v, dim=1), F.normalize(cls, dim=-1), tok, pres, labels, 0.5, (0.7, 1.3))[0]

    assert torch.autograd.gradcheck(fn, (v, cls, tok, pres))


def test_alignment_nearest_neighbour_views(tiny_world):
    from dsol_lite.data.audio import AudioConfig, LogMel
    from dsol_lite.data.datasets import SoloPairs

    ds = SoloPairs(tiny_world, "train", image_size=64)
    batch = {k: torch.stack([ds[i][k] for i in range(6)]) for k in ("image", "audio", "label")}
    losses = []
    for nn_views in (False, True):
        cfg = dataclasses.replace(PEER_PRESETS["quick"], method="alignment", width=8, image_size=64,
                                  align_nn_views=nn_views)
        torch.manual_seed(0)
        model = get_method("alignment").build(cfg, 4)
        torch.manual_seed(1)
        losses.append(get_method("alignment").loss(model, batch, LogMel(AudioConfig()), cfg, 0)[0])
    assert torch.isfinite(losses[1]) and losses[0].item() != losses[1].item()


def test_minmax_maps():
    m = minmax(torch.tensor([[[1.0, 3.0], [2.0, 5.0]], [[2.0, 2.0], [2.0, 2.0]]]))
    assert torch.allclose(m[0], torch.tensor([[0.0, 0.5], [0.25, 1.0]])) and m[1].abs().sum() == 0
    p = peak_relative(torch.tensor([[[0.9, 0.8], [0.5, 0.9]]]), tau=0.1)
    assert torch.allclose(p, torch.tensor([[[1.0, math.exp(-1.0)], [math.exp(-4.0), 1.0]]]))


def test_unknown_method_lists_the_valid_ones():
    with pytest.raises(ConfigError) as err:
        get_method("wav2lip")
    for name in METHODS:
        assert name in str(err.value)
    with pytest.raises(ConfigError, match="unknown method"):
        PeerConfig(method="nope").validate()


def test_methods_that_cannot_give_per_source_maps_say_why():
    for name in ("ezvsl", "fnac", "alignment", "dsol"):
        assert get_method(name).per_source
    assert get_method("avgn").per_source == "" and get_method("avgn").uses_labels


def test_every_method_trains_and_gradients_reach_both_streams(tiny_world):
    for name, method in METHODS.items():
        cfg = dataclasses.replace(PEER_PRESETS["quick"], method=name, width=8, image_size=64, batch_size=6)
        model = method.build(cfg, 4)
        from dsol_lite.data.audio import AudioConfig, LogMel
        from dsol_lite.data.datasets import SoloPairs
        ds = SoloPairs(tiny_world, "train", image_size=64, train=True)
        batch = {k: torch.stack([ds[i][k] for i in range(6)]) for k in ("image", "audio", "label")}
        batch["label"] = batch["label"] % 4
        loss, stats = method.loss(model, batch, LogMel(AudioConfig()), cfg, epoch=cfg.fnac_warmup_epochs)
        loss.backward()
        for stream in ("visual_net", "audio_net"):
            grad = getattr(model.backbones, stream).conv1.weight.grad
            assert grad is not None and grad.abs().sum() > 0, (name, stream)
        assert math.isfinite(stats["loss"])


def test_peer_training_resumes_bitwise(tiny_world, tmp_path):
    cfg = dataclasses.replace(PEER_PRESETS["quick"], method="alignment", width=8, image_size=64, epochs=2,
                              batch_size=8, checkpoint_every=2)
    cpu = torch.device("cpu")
    ref = PeerTrainer(tiny_world, tmp_path / "ref", cfg, cpu, progress_bar=False)
    ref.fit()
    with pytest.raises(Exception, match="interrupted"):
        PeerTrainer(tiny_world, tmp_path / "cut", cfg, cpu, progress_bar=False).fit(interrupt_after=5)
    resumed = PeerTrainer(tiny_world, tmp_path / "cut", cfg, cpu, progress_bar=False)
    assert resumed.progress.global_step == 4  # the last checkpoint before the crash
    resumed.fit()
    for (k, x), y in zip(ref.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(x, y), k
    # a run stopped after its first epoch (a sweep's share) and continued later is the same run
    first = PeerTrainer(tiny_world, tmp_path / "halves", cfg, cpu, progress_bar=False)
    assert first.fit(until_epoch=1)["epochs"] == 1
    rest = PeerTrainer(tiny_world, tmp_path / "halves", cfg, cpu, progress_bar=False)
    assert rest.resumed and rest.fit()["epochs"] == 2 and rest.best == ref.best
    for (k, x), y in zip(ref.model.state_dict().items(), rest.model.state_dict().values()):
        assert torch.equal(x, y), k


def test_comparison_rows_table_and_reasons(tiny_world, tmp_path):
    from dsol_lite.comparison import compare_methods, offscreen_world, peak_places, summarise

    off = offscreen_world(tmp_path / "offscreen", scenes=4)
    base = dataclasses.replace(PEER_PRESETS["compare-quick"], width=8, image_size=64, epochs=1, steps_per_epoch=2,
                               batch_size=8)
    rows = compare_methods(tiny_world, tmp_path / "runs", ["ezvsl", "avgn"], [0, 1], base, torch.device("cpu"), off,
                           progress=False)
    assert [(r["method"], r["seed"]) for r in rows] == [("ezvsl", 0), ("ezvsl", 1), ("avgn", 0), ("avgn", 1)]
    ez, avgn = rows[0], rows[2]
    assert "no map per source" in ez["multi_source"] and "multi_ciou@0.3" not in ez
    assert 0 <= avgn["multi_nsa"] <= 1 and 0 <= avgn["multi_gt_cap"] <= 1
    for r in rows:
        assert 0 <= r["dsol_iou@0.5"] <= 1 and 0 <= r["offscreen_iou@0.5"] <= 1 and 0 <= r["silent_coverage"] <= 1
    table = summarise(rows)
    assert table["EZ-VSL"]["multi_source"] == "n/a" and " ± " in table["AVGN"]["dsol_auc"]
    with pytest.raises(ConfigError, match="unknown method"):
        compare_methods(tiny_world, tmp_path / "runs", ["ezvsl", "nope"], [0], base, torch.device("cpu"))
    from dsol_lite.data.datasets import SoloPairs
    ds = SoloPairs(tiny_world, "test", image_size=64)
    places = peak_places(torch.rand(len(ds), 4, 4), ds)
    assert 0 <= places["peak_on_sounding"] <= 1


def test_peak_places_by_hand(tiny_world):
    from dsol_lite.comparison import peak_places
    from dsol_lite.data.datasets import SoloPairs

    ds = SoloPairs(tiny_world, "test", image_size=64)
    maps = torch.zeros(len(ds), 64, 64)
    for i in range(len(ds)):  # a one-pixel peak at the centre of the sounding box
        frame = ds.frame_of(i)
        x1, y1, x2, y2 = next(iter(frame.sounding_objects())).box
        cx, cy = (x1 + x2) / 2 * 64 / frame.width, (y1 + y2) / 2 * 64 / frame.height
        maps[i, int(cy), int(cx)] = 1.0
    assert peak_places(maps, ds)["peak_on_sounding"] == 1.0


def test_cli_run_with_a_peer_method(tiny_world, tmp_path, monkeypatch, capsys):
    from dsol_lite import cli, comparison

    small = dataclasses.replace(PEER_PRESETS["quick"], width=8, image_size=64, epochs=1, steps_per_epoch=2,
                                batch_size=6)
    monkeypatch.setitem(comparison.PEER_PRESETS, "quick", small)
    code = cli.main(["run", "--method", "fnac", "--world", str(tiny_world), "--runs", str(tmp_path), "--device", "cpu",
                     "--no-progress"])
    assert code == 0
    run = tmp_path / "quick-fnac"
    assert (run / "metrics.json").exists() and (run / "figures" / "heatmaps.png").exists()
    report = (run / "report.md").read_text()
    assert "FNAC" in report and "not applicable" in report
    with pytest.raises(SystemExit):
        cli.main(["run", "--method", "nope"])
    assert "choose one of: dsol, ezvsl, fnac, alignment, avgn" in capsys.readouterr().err


def test_fingerprint_keeps_only_the_method_s_own_settings(tiny_world):
    base = PeerConfig(method="dsol")
    fp = base.fingerprint(tiny_world)
    assert "dsol_negatives" in fp and not any(k.startswith(("fnac_", "align_", "avgn_")) for k in fp)
    assert dataclasses.replace(base, fnac_weights=(1.0, 1.0, 1.0)).fingerprint(tiny_world) == fp
    fnac = PeerConfig(method="fnac")
    equal_weights = dataclasses.replace(fnac, fnac_weights=(1.0, 1.0, 1.0))
    assert equal_weights.fingerprint(tiny_world) != fnac.fingerprint(tiny_world)
