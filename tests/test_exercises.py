"""Every exercise's library solution passes its checker, and a wrong answer fails it."""

from __future__ import annotations

import pytest
import torch

from dsol_lite.exercises import (ex00_log_mel, ex01_correspondence, ex02_stage_one, ex03_object_dictionary,
                                 ex04_stage_two, ex05_evaluation, ex07_real_data)

CASES = [
    (ex00_log_mel.check_log_mel, ex00_log_mel.log_mel_by_hand, lambda w: ex00_log_mel.log_mel_by_hand(w) + 1.0),
    (ex01_correspondence.check_matching_loss, ex01_correspondence.matching_loss,
     lambda v, a, s: ex01_correspondence.matching_loss(v, a, s * 2)),
    (ex02_stage_one.check_iou_of_map, ex02_stage_one.iou_of_map,
     lambda h, g: ((h > 0.5 * h.max()) & g).sum().item() / ((h > 0.5 * h.max()) | g).sum().item()),
    (ex03_object_dictionary.check_object_feature, ex03_object_dictionary.object_feature,
     lambda v, h: v[:, h > 0.05].mean(dim=1)),  # forgets the dilation
    (ex04_stage_two.check_class_aware_maps, ex04_stage_two.class_aware_maps,
     lambda v, d, w, b, m: ex04_stage_two.class_aware_maps(v, d, w, b, torch.ones_like(m))),  # no silent filter
    (ex05_evaluation.check_non_sounding_area, ex05_evaluation.non_sounding_area,
     lambda maps, s: (maps <= 0.2).float().mean().item()),  # counts the sounding classes too
    (ex07_real_data.check_frame_for_key, ex07_real_data.frame_for_key,
     lambda key, fps: int(key[-9:-4])),  # the key's frame number taken as a frame index
]


@pytest.mark.parametrize("check, solution, wrong", CASES, ids=["ex00", "ex01", "ex02", "ex03", "ex04", "ex05", "ex07"])
def test_solution_passes_and_a_wrong_answer_fails(check, solution, wrong):
    assert check(solution).startswith("correct")
    with pytest.raises(AssertionError):
        check(wrong)


def test_stub_errors_surface():
    def stub(*args):
        raise NotImplementedError("your turn")

    with pytest.raises(NotImplementedError):
        ex01_correspondence.check_matching_loss(stub)
    assert torch.is_tensor(ex03_object_dictionary.object_feature(torch.ones(2, 3, 3), torch.full((3, 3), 0.9)))
