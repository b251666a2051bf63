"""The evaluation protocols computed exactly as the original code computes them: EZ-VSL's threshold rule
and upsampling, DSOL's masks of real boxes, NSA's class set on real duets, ties in the success curve,
and which box file is which. Every expected value below is worked out by hand."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from dsol_lite.data.annotations import box_file_format, read_audioset_boxes, read_boxes, read_music_index
from dsol_lite.data.datasets import SoloPairs
from dsol_lite.data.music import PrepareConfig, prepare_music
from dsol_lite.data.prepared import build_cache
from dsol_lite.data.video import make_video
from dsol_lite.errors import AnnotationError
from dsol_lite.evaluate import evaluate_single_source
from dsol_lite.metrics import dsol_multi_source, dsol_single_source, ezvsl, iou, success_curve, upsample


def mask(n: int, pixels: list[tuple[int, int]]) -> torch.Tensor:
    m = torch.zeros(1, n, n, dtype=torch.bool)
    for y, x in pixels:
        m[0, y, x] = True
    return m


# ---- 1. EZ-VSL's threshold rule -------------------------------------------------------------------

LEFT_HALF = [(y, x) for y in range(4) for x in range(2)]  # 8 of 16 pixels


@pytest.mark.parametrize("name, values, expected", [
    # a constant (or all-zero) map stays constant; every pixel is >= the upper median: the whole frame
    ("constant", [[2.0] * 4] * 4, 8 / 16),
    ("all zero", [[0.0] * 4] * 4, 8 / 16),
    # one hot: sorted, index 8 of 16 is 0, so every pixel is kept: the whole frame again
    ("one hot", [[1.0, 0, 0, 0]] + [[0.0] * 4] * 3, 8 / 16),
    # a plateau at the median: 0 1 1 1, eleven 2s, one 3; index 8 is a 2, so the twelve pixels of rows 0-2 are
    # kept: 6 of them in the left half, union 12 + 8 - 6
    ("plateau", [[3, 2, 2, 2], [2, 2, 2, 2], [2, 2, 2, 2], [1, 1, 1, 0]], 6 / 14),
    # quantised: two values, eight each; index 8 is the higher one: exactly those eight
    ("quantised", [[5, 5, 0, 0]] * 4, 1.0),
])
def test_ezvsl_keeps_pixels_at_or_above_the_upper_median(name, values, expected):
    gt = mask(4, LEFT_HALF)
    assert ezvsl(torch.tensor([values], dtype=torch.float32), gt)["ciou"].item() == pytest.approx(expected), name


def test_each_protocol_upsamples_as_its_code_does():
    row = torch.tensor([[[0.0, 1.0]]])
    assert upsample(row, (1, 4), align_corners=True).flatten().tolist() == pytest.approx([0, 1 / 3, 2 / 3, 1])
    assert upsample(row, (1, 4)).flatten().tolist() == pytest.approx([0, 0.25, 0.75, 1])  # half-pixel (cv2)
    maps = torch.rand(40, 4, 4, generator=torch.Generator().manual_seed(3))
    gt = torch.zeros(40, 16, 16, dtype=torch.bool)
    gt[:, 2:9, 5:12] = True
    table = evaluate_single_source(maps, gt, prior_area=49.0)["model"]
    assert torch.equal(table["_ezvsl"]["ciou"], ezvsl(upsample(maps, 16, align_corners=True), gt)["ciou"])
    assert torch.equal(table["_dsol"]["iou"], dsol_single_source(upsample(maps, 16), gt)["iou"])
    assert not torch.equal(table["_ezvsl"]["ciou"], ezvsl(upsample(maps, 16), gt)["ciou"])


# ---- 5. ties in the success curve ---------------------------------------------------------------

def test_a_score_exactly_at_a_threshold_counts():
    pred, gt = mask(10, [(0, x) for x in range(9)]), mask(10, [(y, x) for y in range(2) for x in range(10)])
    score = iou(pred, gt)  # 9 of 20 pixels
    assert score.dtype == torch.float64 and score.item() == 9 / 20
    curve, _ = success_curve(score)
    assert curve[9].item() == 1.0 and curve[10].item() == 0.0  # counted at 0.45, not at 0.50
    scores = torch.tensor([0.05, 0.5, 1.0, 0.0], dtype=torch.float64)
    curve, area = success_curve(scores)
    assert curve.tolist()[:3] == [1.0, 0.75, 0.5] and curve[10].item() == 0.5 and curve[20].item() == 0.25
    assert area == pytest.approx(0.05 * (0.875 + 0.625 + 8 * 0.5 + 0.375 + 9 * 0.25))  # trapezoids


# ---- 4. NSA's class set on a real duet ----------------------------------------------------------

def test_nsa_counts_the_classes_without_a_box_as_dsol_does():
    # three classes: 0 sounds and is boxed, 1 sounds (the video lists it) but is never boxed, 2 is not listed
    maps = torch.zeros(1, 3, 4, 4)
    maps[0, 1, :2] = 0.9  # half of class 1's map is above 0.2
    maps[0, 2, :1] = 0.9  # a quarter of class 2's map
    gt = torch.zeros(1, 3, 4, 4, dtype=torch.bool)
    gt[0, 0, 1:3, 1:3] = True
    sounding = torch.tensor([[1.0, 1.0, 0.0]])
    result = dsol_multi_source(maps, gt, sounding, rel_threshold=0.2)
    assert result["nsa"] == pytest.approx((0.5 + 0.75) / 2)  # DSOL: classes 1 and 2 have no box
    assert result["nsa_not_heard"] == pytest.approx(0.75)  # the video's list: class 2 only


def test_per_half_scoring_is_an_option_and_scores_each_source_on_its_own_half():
    maps = torch.zeros(1, 2, 4, 8)
    maps[0, 0] = 0.6  # class 0 lights the whole frame; its box is the left quarter
    maps[0, 1, :, 4:] = 0.6
    gt = torch.zeros(1, 2, 4, 8, dtype=torch.bool)
    gt[0, 0, :, :2] = True
    gt[0, 1, :, 4:] = True
    sounding = torch.ones(1, 2)
    whole = dsol_multi_source(maps, gt, sounding)
    halves = dsol_multi_source(maps, gt, sounding, halves=True)
    assert whole["ciou"].item() == pytest.approx((8 / 32 + 1.0) / 2)  # class 0: 8 boxed of 32 lit pixels
    assert halves["ciou"].item() == pytest.approx((8 / 16 + 1.0) / 2)  # only its own (left) half counts
    assert halves["protocol"] == "dsol_multi_halves" and whole["protocol"] == "dsol_multi"


# ---- 3. masks of real boxes: DSOL's formula at the scoring size, on every path ---------------------

NORMBOX = [0.1234, 0.2011, 0.5003, 0.3339]  # x, y, w, h: awkward fractions on purpose


def dsol_mask(size: int) -> torch.Tensor:
    x, y, w, h = NORMBOX
    m = torch.zeros(size, size)
    m[int(y * size):int((y + h) * size), int(x * size):int((x + w) * size)] = 1
    return m


@pytest.fixture(scope="module")
def real(tmp_path_factory) -> Path:
    """Two annotated 2-s videos in DSOL's box format (one becomes validation, one test)."""
    root = tmp_path_factory.mktemp("real")
    boxes = {}
    for v in ("celloAAAA1x", "celloBBBB2x"):
        make_video(root / "videos" / f"{v}.mp4", 2.0, 30, size=(160, 90))
        boxes[f"{v}_0_1000/frame_001/00037.jpg"] = {
            "bbox": [{"box": [round(NORMBOX[0] * 160), round(NORMBOX[1] * 90), round(NORMBOX[2] * 160),
                              round(NORMBOX[3] * 90)], "normbox": NORMBOX, "category_id": 1}],
            "wdith": 160, "height": 90}
    (root / "boxes.json").write_text(json.dumps(boxes))
    (root / "index.json").write_text(json.dumps({"videos": {"cello": ["celloAAAA1x", "celloBBBB2x"]}}))
    out = root / "music"
    prepare_music(out, read_music_index(root / "index.json"), root / "videos", read_boxes(root / "boxes.json"),
                  PrepareConfig(segment_seconds=1.0, frame_height=72, val_videos=1), progress=False)
    return out


@pytest.mark.parametrize("size", [224, 128])
def test_real_boxes_are_drawn_as_dsol_draws_them(real, tmp_path, size):
    files = SoloPairs(real, "test", image_size=size)[0]["gt_mask"]
    assert torch.equal(files, dsol_mask(size))
    cached = SoloPairs(real, "test", image_size=size, prepared=build_cache(real, tmp_path / "c", size,
                                                                            progress=False))[0]["gt_mask"]
    assert torch.equal(cached, files)  # the prepared cache's path: the same mask
    assert torch.equal(SoloPairs(real, "val", image_size=size)[0]["gt_mask"], dsol_mask(size))


# ---- 6. which box file is which ------------------------------------------------------------------

def write(path: Path, payload) -> Path:
    path.write_text(json.dumps(payload))
    return path


def test_dsols_audioset_file_is_read(tmp_path):
    f = write(tmp_path / "a.json", {"abcdefghijk/3": {"bbox": [{"category": 2, "normbox": [0.25, 0.5, 0.5, 0.25]}]},
                                    "zyxwvutsrqp/7": {"bbox": [{"category": "violin", "normbox": [0, 0, 1, 1]}]},
                                    "mmmmmmmmmmm/1": {"bbox": []}})
    assert box_file_format(f) == "audioset"
    boxes = read_boxes(f)
    first, second = boxes.frames
    assert (first.video, first.time, first.boxes[0].label) == ("abcdefghijk", 3.0, "category 2")
    assert (first.boxes[0].x1, first.boxes[0].y1, first.boxes[0].x2, first.boxes[0].y2) == (0.25, 0.5, 0.75, 0.75)
    assert second.boxes[0].label == "violin" and boxes.skipped == [("mmmmmmmmmmm/1", "annotated frame without a box")]
    with pytest.raises(AnnotationError, match="'category' must be an id or a name"):
        read_audioset_boxes(write(tmp_path / "b.json", {"v/1": {"bbox": [{"normbox": [0, 0, 1, 1]}]}}))


def test_a_vggss_file_whose_first_entry_has_no_box(tmp_path):
    f = write(tmp_path / "v.json", [{"file": "aaaaaaaaaaa_000010", "class": "dog", "bbox": []},
                                    {"file": "bbbbbbbbbbb_000020", "class": "cat", "bbox": [[0.1, 0.2, 0.5, 0.6]]}])
    assert box_file_format(f) == "vggss"
    boxes = read_boxes(f)
    assert [fb.video for fb in boxes.frames] == ["bbbbbbbbbbb_000020"] and boxes.skipped[0][0] == "aaaaaaaaaaa_000010"


def test_a_file_of_no_known_format_is_refused_by_name(tmp_path):
    with pytest.raises(AnnotationError, match="key 'v/notasecond' is neither DSOL's MUSIC"):
        read_boxes(write(tmp_path / "x.json", {"v/notasecond": {"bbox": []}}))
    with pytest.raises(AnnotationError, match="not a DSOL .* AVGN or VGG-SS box file"):
        read_boxes(write(tmp_path / "y.json", [{"file": "a"}]))
