"""The world is learnable: each modality alone identifies the class of held-out scenes.

A linear classifier on clip-level log-mel statistics, and one on raw pixels of the sounding
object's crop, must each reach >= 90 % on scenes it never saw. (Proof the world is learnable,
not that localization in it is trivial: the crop is given here, a localizer must find it.)
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from dsol_lite.data.audio import LogMel, crop_window
from dsol_lite.synth.config import preset
from dsol_lite.synth.scenes import make_scene


@pytest.fixture(scope="module")
def features():
    cfg = preset("tiny", counts={"solo": (320, 0, 160)})
    log_mel = LogMel()

    def collect(split: str, n: int):
        audio, crops, labels = [], [], []
        for i in range(n):
            scene = make_scene(cfg, "solo", split, i)
            mel = log_mel(torch.from_numpy(crop_window(scene.mixture, cfg.sample_rate, cfg.clip_seconds / 2)))[0]
            audio.append(torch.cat([mel.mean(0), mel.std(0)]).numpy())
            obj = next(o for o in scene.objects if o.sounding)
            x1, y1, x2, y2 = obj.box
            crops.append(np.asarray(Image.fromarray(scene.image[y1:y2, x1:x2]).resize((16, 16))).ravel() / 255.0)
            labels.append(obj.class_id)
        return np.array(audio), np.array(crops), np.array(labels)

    return collect("train", 320), collect("test", 160)


@pytest.mark.parametrize("modality", [0, 1], ids=["audio", "image_crops"])
def test_each_modality_alone_separates_the_classes(features, modality):
    (train, test) = features
    assert len(set(train[2])) == 8 and len(set(test[2])) == 8
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000)).fit(train[modality], train[2])
    assert clf.score(test[modality], test[2]) >= 0.9
