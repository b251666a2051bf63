"""DSOL's object dictionary: features of what stage one localizes, clustered into objects.

Notebook: 03_object_dictionary.

For every training clip: the localization map is thresholded (> 0.05) and grown by its four
neighbours; the object feature is the backbone feature averaged over that mask. k-means on
the L2-normalised object features gives pseudo-labels; the dictionary row of cluster k is the
mean object feature of its members (K x C). Stage two compares every location of a frame with
these rows.

Normalisation, a deliberate choice: the original code multiplies the feature map by the mask
and averages over the *whole grid* (divides by h*w); we average over the *mask* (the object's
mean feature). Both give the same direction, so k-means (on normalised features) is the same,
but dictionary rows differ: with the grid average, small objects shrink towards zero and
large objects dominate each row. ``normalize="grid"`` reproduces the original.

The dictionary and the audio classifier used in stage two must come from the same clustering
round (the original code mixes rounds by default). A ``DictionaryRound`` file stores both,
with a digest of the classifier, and ``check_pairing`` refuses a mismatch.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from sklearn.cluster import KMeans
from sklearn.metrics import normalized_mutual_info_score

from dsol_lite.errors import ConfigError, DataError
from dsol_lite.training import atomic_torch_save


def dilate4(mask: torch.Tensor) -> torch.Tensor:
    """Grow a boolean mask ``(N, h, w)`` by its 4-neighbours (borders included)."""
    grown = mask.clone()
    grown[:, 1:, :] |= mask[:, :-1, :]
    grown[:, :-1, :] |= mask[:, 1:, :]
    grown[:, :, 1:] |= mask[:, :, :-1]
    grown[:, :, :-1] |= mask[:, :, 1:]
    return grown


def object_features(v_fea: torch.Tensor, maps: torch.Tensor, threshold: float = 0.05,
                    normalize: str = "mask") -> tuple[torch.Tensor, torch.Tensor]:
    """Masked means of ``v_fea (N, C, h, w)`` over ``dilate4(maps > threshold)``.

    Returns ``(features (N, C), empty (N,))``. Where the map never exceeds the threshold the
    mask is empty; those clips fall back to their single most confident location (and are
    flagged in ``empty`` so callers can report how often that happens).
    """
    if normalize not in ("mask", "grid"):
        raise ConfigError(f"normalize={normalize!r}: use 'mask' (object mean) or 'grid' (original DSOL)")
    mask = dilate4(maps > threshold)
    empty = ~mask.flatten(1).any(1)
    if empty.any():
        peak = maps[empty].flatten(1).argmax(1)
        fallback = torch.zeros_like(mask[empty]).flatten(1)
        fallback[torch.arange(len(peak)), peak] = True
        mask[empty] = fallback.view_as(mask[empty])
    weights = mask.float().unsqueeze(1)
    total = (v_fea * weights).sum(dim=(2, 3))
    divisor = weights.sum(dim=(2, 3)) if normalize == "mask" else torch.full_like(total[:, :1], maps[0].numel())
    return total / divisor, empty


def run_kmeans(features: torch.Tensor, k: int, seed: int) -> np.ndarray:
    """Seeded k-means on L2-normalised features; returns the cluster of every row."""
    n = features.shape[0]
    if n == 0:
        raise DataError("object features", "there are no object features to cluster (empty dataset?)")
    if k > n:
        raise ConfigError(f"num_clusters={k} is larger than the number of object features ({n})")
    x = torch.nn.functional.normalize(features.double(), dim=1).numpy()
    return KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(x)


def build_dictionary(features: torch.Tensor, assign: np.ndarray, k: int) -> torch.Tensor:
    """Row k = mean (un-normalised) object feature of cluster k: (K, C)."""
    assign_t = torch.as_tensor(assign, dtype=torch.long)
    sums = torch.zeros(k, features.shape[1], dtype=features.dtype).index_add_(0, assign_t, features)
    counts = torch.bincount(assign_t, minlength=k).clamp_min(1).unsqueeze(1)
    return sums / counts


def contingency(assign: np.ndarray, labels: np.ndarray, k: int, num_classes: int) -> np.ndarray:
    """counts[c, y]: members of cluster c with true class y."""
    table = np.zeros((k, num_classes), dtype=np.int64)
    np.add.at(table, (assign, labels), 1)
    return table


def hungarian_mapping(table: np.ndarray) -> dict[int, int]:
    """Cluster -> class, one-to-one, maximising the clips that agree (scipy's Hungarian solver).

    With more clusters than classes, the clusters left over map to their majority class.
    """
    rows, cols = linear_sum_assignment(table, maximize=True)
    mapping = {int(r): int(c) for r, c in zip(rows, cols)}
    for r in range(table.shape[0]):
        mapping.setdefault(r, int(table[r].argmax()))
    return mapping


def cluster_report(assign: np.ndarray, labels: np.ndarray, k: int, num_classes: int) -> dict:
    """NMI, purity, Hungarian accuracy and the contingency table (for reporting only)."""
    table = contingency(assign, labels, k, num_classes)
    mapping = hungarian_mapping(table)
    hungarian_acc = sum(table[c, y] for c, y in mapping.items()) / max(len(labels), 1)
    return {"nmi": float(normalized_mutual_info_score(labels, assign)),
            "purity": float(table.max(1).sum() / max(len(labels), 1)),
            "hungarian_acc": float(hungarian_acc), "mapping": mapping, "table": table}


def classifier_digest(state: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for key in sorted(state):
        h.update(key.encode())
        h.update(state[key].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


@dataclass
class DictionaryRound:
    """One clustering round: the dictionary and the audio classifier trained on its labels."""

    round: int
    dictionary: torch.Tensor  # (K, C)
    audio_classifier: dict[str, torch.Tensor]  # state of the K-way audio head
    pseudo_labels: torch.Tensor  # (N,) cluster of every training clip
    stats: dict = field(default_factory=dict)  # nmi, purity, ... (numbers only)

    @property
    def digest(self) -> str:
        return classifier_digest(self.audio_classifier)

    def save(self, path: str | Path) -> None:
        """Atomic write (temporary file, then rename); loadable with ``weights_only=True``."""
        payload = {"round": self.round, "dictionary": self.dictionary, "pseudo_labels": self.pseudo_labels,
                   "audio_classifier": self.audio_classifier, "digest": self.digest,
                   "stats": {k: float(v) for k, v in self.stats.items()}}
        atomic_torch_save(payload, Path(path))

    @classmethod
    def load(cls, path: str | Path) -> "DictionaryRound":
        path = Path(path)
        if not path.is_file():
            raise DataError(path, "dictionary file is missing (train stage one first)")
        try:
            d = torch.load(path, map_location="cpu", weights_only=True)
            out = cls(int(d["round"]), d["dictionary"], d["audio_classifier"], d["pseudo_labels"], d["stats"])
        except Exception as err:  # a truncated or foreign file
            raise DataError(path, f"not a readable dictionary round ({type(err).__name__}: {err})") from None
        if out.digest != d["digest"]:
            raise DataError(path, "the audio classifier does not match the digest stored with it")
        return out


def check_pairing(dictionary: DictionaryRound, audio_classifier: dict[str, torch.Tensor]) -> None:
    """Refuse an audio classifier that was not trained in the dictionary's clustering round."""
    digest = classifier_digest(audio_classifier)
    if digest != dictionary.digest:
        raise ConfigError(f"the audio classifier ({digest}) is not the one of dictionary round "
                          f"{dictionary.round} ({dictionary.digest}): dictionary and classifier must come "
                          f"from the same clustering round")
