"""DSOL stage one: learn to localize in single-source clips, alternating with the dictionary.

Notebook: 02_stage_one (the clustering rounds: dictionary_rounds, notebook 03).

Every epoch: (1) *localize*: train the matching task on solo clips; from the second epoch on
(2) *cluster*: extract object features with the current maps and run k-means; (3) *classify*:
fresh K-way visual and audio heads, trained with the backbones on the pseudo-labels; then
(4) *validate*: DSOL's IoU@0.5 on the validation split, and (5) *select*: the best epoch so far
is kept (chosen on val, never on the test split). Each phase is resumable mid-way; ``best.pt``
and ``dictionary.pt`` (the dictionary and the audio classifier of one clustering round) are what
later stages load.

With a frozen trunk in the classify phase (``class_lr=0``) a round cannot change what the network
localizes, so ``rounds="best"`` only localizes, validates and selects during training, and runs
one round at the end, for the selected epoch: the same ``best.pt`` and ``dictionary.pt`` as a round
every epoch, without the rounds nobody would use. Validation also reports the NMI of k-means on the
validation clips, so how class-like the features grow stays visible epoch by epoch.

With ``ema_decay > 0`` (off in the presets) validation judges a moving average of the weights
(``judged``), ``best.pt`` keeps it and the round clusters it; training itself never sees it.

The round itself (extract, cluster, classify) is in ``dictionary_rounds``; this module holds the
settings, the presets and the epoch loop.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from dsol_lite.config import default_device
from dsol_lite.data.audio import AudioConfig, LogMel
from dsol_lite.data.audio_augment import SNR_RANGE_DB, AudioAugment
from dsol_lite.data.datasets import SoloPairs
from dsol_lite.data.schema import DatasetManifest
from dsol_lite.data.store import ClipStore
from dsol_lite.dictionary_rounds import DictionaryRounds
from dsol_lite.distributed import (Ranks, broadcast_from_main, check_batch_size, gather_rows,
                                   gather_with_grad, streams_part, sync_batchnorm, wait_for_main, wrap)
from dsol_lite.errors import ConfigError, check_settings
from dsol_lite.evaluate import validate_stage_one
from dsol_lite.models import BackbonePair, DSOLStageOne
from dsol_lite.models.backbones import check_mosaic
from dsol_lite.models.dsol import StageOneOutput
from dsol_lite.objectives import stage_one_loss
from dsol_lite.training import (Interrupted, ResumableRun, autocast, grad_scaler, batch_order, iterate,
                                optimizer_step, seed_everything, settings_fingerprint, to_device,
                                world_fingerprint)

_NOT_IN_FINGERPRINT = ("checkpoint_every", "prepared")


@dataclass(frozen=True)
class StageOneConfig:
    """DSOL's stage-one settings (defaults = the paper's); see ``STAGE_ONE_PRESETS``."""

    width: int = 64  # ResNet-18 channels / 8 at the output (64 = the real network)
    image_size: int = 224  # training crops
    eval_size: int | None = None  # validation, object features and test (None: image_size); see evaluation_size
    embed_dim: int = 128
    batch_size: int = 32
    epochs: int = 15
    lr: float = 1e-4
    lr_schedule: str = "constant"  # "cosine": warm-up, then cosine decay; "step": 10x lower for the last quarter
    decay_at: float = 0.75  # with lr_schedule="step": the fraction of the epochs before the drop
    warmup_steps: int = 0
    weight_decay: float = 1e-4
    heads_lr: float = 1e-3
    scale_lr_mult: float = 1.0  # the map's scale learns this many times faster than the trunk
    class_lr: float | None = None  # trunk learning rate on pseudo-labels (None: lr; 0: trunk frozen, heads only)
    class_passes: int = 3  # passes over the pseudo-labelled clips per round
    cluster_from_epoch: int = 1  # the first epoch that clusters (DSOL: the second)
    select_from: float = 0.0  # no epoch before this fraction of the epochs is selected (see first_eligible_epoch)
    rounds: str = "every"  # "every" epoch clusters (DSOL); "best": one round, for the selected epoch (class_lr=0)
    mask_threshold: float = 0.05
    feature_norm: str = "mask"  # "mask" (object mean) or "grid" (original DSOL)
    num_clusters: int | None = None  # default: the number of classes
    imagenet: bool = False  # ImageNet weights for the visual stream (downloads; width 64 only)
    avoid_same_class: bool = False  # negatives of another class (uses labels: a teaching switch)
    avoid_same_cluster: bool = False  # once clustered, no negatives from the audio's own pseudo-label cluster
    negatives: str = "one"  # "one" partner frame per audio (DSOL) or "all" other frames of the batch
    mosaic: bool = False  # training frames seen 2 x 2 in one picture, negatives beside positives (not in DSOL)
    noise_aug: float = 0.0  # fraction of training clips that hear background noise (data.audio_augment; not in DSOL)
    noise_snr_db: tuple[float, float] = SNR_RANGE_DB  # the range its SNR is drawn from, in dB
    offscreen_aug: float = 0.0  # fraction that also hear another clip's instrument, not in view (not in DSOL)
    seed: int = 0
    checkpoint_every: int = 100  # steps
    prepared: str | None = None  # a prepared cache of the dataset (dsol-lite cache): read, not decoded
    ema_decay: float = 0.0  # > 0: validate, select and cluster a moving average of the weights (not in DSOL)

    def validate(self) -> "StageOneConfig":
        check_settings(self, positive=("lr", "heads_lr", "scale_lr_mult"), non_negative=("weight_decay", "class_lr"),
                       at_least={"width": 4, "image_size": 32, "embed_dim": 1, "epochs": 1, "warmup_steps": 0,
                                 "class_passes": 0, "cluster_from_epoch": 0, "num_clusters": 2, "seed": 0,
                                 "checkpoint_every": 1})
        if self.batch_size < 2:
            raise ConfigError(f"batch_size={self.batch_size}: negatives need at least 2 clips per batch")
        if self.imagenet and self.width != 64:
            raise ConfigError(f"imagenet=True needs width=64 (got {self.width})")
        if self.lr_schedule not in ("constant", "cosine", "step"):
            raise ConfigError(f"lr_schedule={self.lr_schedule!r}: use 'constant', 'cosine' or 'step'")
        if not 0 <= self.select_from < 1:
            raise ConfigError(f"select_from={self.select_from}: the fraction of the epochs before which none is "
                              f"selected, at least 0 and below 1")
        if not 0 < self.decay_at < 1:
            raise ConfigError(f"decay_at={self.decay_at}: the step schedule drops the rate after this fraction of "
                              f"the epochs, between 0 and 1")
        if self.rounds not in ("every", "best"):
            raise ConfigError(f"rounds={self.rounds!r}: use 'every' (DSOL) or 'best'")
        if self.rounds == "best" and (self.class_lr != 0 or self.avoid_same_cluster):
            raise ConfigError("rounds='best' needs class_lr=0 and avoid_same_cluster=False: otherwise a clustering "
                              "round changes the training that follows it, and every epoch must have its round")
        if not 0 <= self.ema_decay < 1:
            raise ConfigError(f"ema_decay={self.ema_decay}: use 0 (off) or a decay in (0, 1), e.g. 0.995")
        if self.ema_decay and self.rounds != "best":
            raise ConfigError("ema_decay > 0 needs rounds='best': the one round then clusters the selected average; "
                              "with a round every epoch the pseudo-labels would come from the live weights")
        AudioAugment(self.noise_aug, self.offscreen_aug, self.noise_snr_db)  # raises on impossible values
        if self.negatives not in ("one", "all"):
            raise ConfigError(f"negatives={self.negatives!r}: use 'one' (DSOL) or 'all'")
        if self.mosaic:
            check_mosaic(self.batch_size, self.image_size)
        if not 0 <= self.mask_threshold < 1:
            raise ConfigError(f"mask_threshold={self.mask_threshold}: use a value in [0, 1)")
        if self.feature_norm not in ("mask", "grid"):
            raise ConfigError(f"feature_norm={self.feature_norm!r}: use 'mask' or 'grid' (original DSOL)")
        if self.eval_size is not None and self.eval_size < 32:
            raise ConfigError(f"eval_size={self.eval_size}: at least 32 px (the map is 1/16 of the input)")
        if self.prepared is not None and self.evaluation_size != self.image_size:
            raise ConfigError(f"eval_size={self.eval_size} with a prepared cache: the cache holds frames of one "
                              f"size ({self.image_size} px); set eval_size to none or to image_size")
        return self

    @property
    def evaluation_size(self) -> int:
        """The input size of every pass that is not training: validation, object features, test.

        The map is 1/16 of the input, so the input size sets how finely it can outline an object:
        the quick world's native 160 px gives a 10 x 10 map, 128 px an 8 x 8 one. The quick preset
        scores stage one at its training size, 128 px, where it validated better than at 160 on
        ten draws of ten (notebook 02, section 5, and what the grid alone costs); stage two, which
        validated better at 160, has its own ``StageTwoConfig.eval_size``.
        """
        return self.eval_size or self.image_size

    @property
    def first_eligible_epoch(self) -> int:
        """The first epoch validation may select: one with a clustering round (``cluster_from_epoch``)
        and past ``select_from`` of the run. Selecting from the second half (the quick preset) keeps
        an early epoch that validates as well as later ones, but whose features are not yet
        class-like, from becoming the dictionary (docs/results.md)."""
        return max(self.cluster_from_epoch, int(self.select_from * self.epochs))

    @property
    def decay_epoch(self) -> int:
        """With ``lr_schedule="step"``: the first epoch at a tenth of the rate (16 epochs: the 13th)."""
        return int(self.decay_at * self.epochs)

    def fingerprint(self, world: "DatasetManifest | str | Path") -> dict:
        # options left out while off: the same settings as runs made before they existed
        d = settings_fingerprint(self, _NOT_IN_FINGERPRINT, {"eval_size": None, "decay_at": 0.75, "rounds": "every",
                                                                 "ema_decay": 0.0, "mosaic": False,
                                                                 "select_from": 0.0, "noise_aug": 0.0,
                                                                 "offscreen_aug": 0.0, "noise_snr_db": SNR_RANGE_DB})
        return d | {"world": world_fingerprint(world)}


_QUICK = StageOneConfig(width=16, image_size=128, epochs=16, lr=5e-4, lr_schedule="step", scale_lr_mult=20.0,
                        class_passes=1, class_lr=0.0, rounds="best", negatives="all", mosaic=True, select_from=0.5,
                        checkpoint_every=25)
STAGE_ONE_PRESETS = {
    # the course's recipe, a narrow ResNet-18 at 128 px: minutes on a 2-core CPU. It departs from DSOL where
    # the quick world's validation split asked for it (notebook 02, section 1; docs/results.md):
    # every other frame of the batch as a negative, frames tiled 2 x 2 (the mosaic), a scale that learns 20x
    # faster, the trunk frozen while the pseudo-label heads learn (so one clustering round, for the selected
    # epoch), the trunk's rate at a tenth for the last quarter, and no epoch of the first half selected
    "quick": _QUICK,
    # the same recipe at DSOL's size (the real ResNet-18, 224-px crops of the 256-px full world), from scratch:
    # ImageNet weights help photographs, not the synthetic shapes, and need a download (imagenet=True adds them)
    "full": dataclasses.replace(_QUICK, width=64, image_size=224, checkpoint_every=100),
    # DSOL's published settings, unchanged (lr 1e-4, one negative per audio, the trunk trained on the
    # pseudo-labels in every round, ImageNet weights): for MUSIC, and to see what they do on the synthetic world
    "paper": StageOneConfig(imagenet=True),
}


def build_stage_one(cfg: StageOneConfig, num_clusters: int) -> DSOLStageOne:
    return DSOLStageOne(BackbonePair(cfg.width, imagenet=cfg.imagenet), num_clusters, cfg.embed_dim)


def stage_one_optimizer(model: DSOLStageOne, cfg: StageOneConfig) -> torch.optim.Adam:
    """Adam over all but the pseudo-label heads: the trunk in one group, the map's scale in another
    (``set_stage_one_lr`` gives it ``scale_lr_mult`` times the rate)."""
    trunk = [p for n, p in model.named_parameters() if "classifier" not in n and n != "scale"]
    return torch.optim.Adam([{"params": trunk, "lr_mult": 1.0},
                             {"params": [model.scale], "lr_mult": cfg.scale_lr_mult}],
                            lr=cfg.lr, weight_decay=cfg.weight_decay)


def set_stage_one_lr(optimizer: torch.optim.Optimizer, lr: float, scale_lr: float | None = None) -> None:
    """Set the trunk's learning rate and the scale's (``scale_lr_mult`` x ``scale_lr``, default ``lr``)."""
    trunk, scale = optimizer.param_groups
    trunk["lr"] = lr * trunk["lr_mult"]
    scale["lr"] = (lr if scale_lr is None else scale_lr) * scale["lr_mult"]


class StageOneTrainer(DictionaryRounds, ResumableRun):
    """Stage one in one process, or in several (``ranks``, see ``dsol_lite.distributed``): each rank
    then takes its share of every global batch of ``cfg.batch_size`` clips, with the same result."""

    def __init__(self, world: str | Path | ClipStore, run_dir: str | Path, cfg: StageOneConfig,
                 device: torch.device | None = None, progress_bar: bool = True, ranks: Ranks = Ranks()) -> None:
        self.cfg, self.run_dir = cfg.validate(), Path(run_dir)
        self.device = device or default_device()
        self.progress_bar, self.ranks = progress_bar, ranks
        check_batch_size(cfg.batch_size, ranks, 4 if cfg.mosaic else 1,
                         "with mosaic=True each process tiles its own frames four to a picture")
        self.store = ClipStore.open(world, cfg.prepared, cfg.image_size, self.device)  # shared by every stage
        kw = {"seed": cfg.seed, "device": self.device}
        self.train_set = SoloPairs(self.store, "train", image_size=cfg.image_size, train=True, masks=False,
                                   audio_augment=AudioAugment(cfg.noise_aug, cfg.offscreen_aug, cfg.noise_snr_db), **kw)
        self.feature_set = SoloPairs(self.store, "train", image_size=cfg.evaluation_size, **kw)  # no augmentation
        self.val_set = SoloPairs(self.store, "val", image_size=cfg.evaluation_size, **kw)
        self.classes = self.train_set.classes
        self.k = cfg.num_clusters or len(self.classes)
        if self.k > len(self.train_set):
            raise ConfigError(f"num_clusters={self.k} is larger than the number of training clips "
                              f"({len(self.train_set)}): k-means needs at least one clip per cluster")
        seed_everything(cfg.seed)
        self.model = build_stage_one(cfg, self.k).to(self.device)
        if ranks.enabled:  # before the optimizers: SyncBatchNorm brings new modules
            sync_batchnorm(self.model, self.device)
        self.log_mel = LogMel(AudioConfig()).to(self.device)
        self.optimizer = stage_one_optimizer(self.model, cfg)
        self.average = (AveragedModel(self.model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema_decay), use_buffers=True)
                        if cfg.ema_decay else None)
        self._new_heads_optimizer()
        self.scaler = grad_scaler(self.device)
        self.round, self.dictionary, self.pseudo_labels = -1, None, None
        self.best_epoch = -1
        self.round_stats: dict[str, float] = {}
        self._head_inputs: tuple[torch.Tensor, torch.Tensor] | None = None
        self.best, self.val_score = float("-inf"), float("-inf")
        self._open_run(self.run_dir, cfg.fingerprint(self.store.manifest))
        self._streams, self._classifier = None, None  # DDP wrappers (distributed runs), made when needed
        if ranks.enabled:
            self._streams = wrap(streams_part(self.model), self.device)

    # -- state --------------------------------------------------------------------------
    def _optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"trunk": self.optimizer, "heads": self.heads_optimizer}

    def _extra_state(self) -> dict:
        return {"round": self.round, "best": self.best, "best_epoch": self.best_epoch, "val_score": self.val_score,
                "dictionary": self.dictionary, "pseudo_labels": self.pseudo_labels, "round_stats": self.round_stats,
                "average": self.average.state_dict() if self.average is not None else None}

    def _load_extra_state(self, extra: dict) -> None:
        self.round, self.best = int(extra["round"]), float(extra["best"])
        self.best_epoch = int(extra.get("best_epoch", self.round))  # runs saved before it was kept: their last round
        self.val_score = float(extra.get("val_score", float("-inf")))
        self.dictionary, self.pseudo_labels = extra["dictionary"], extra["pseudo_labels"]
        self.round_stats = dict(extra.get("round_stats", {}))
        if self.average is not None:
            self.average.load_state_dict(extra["average"])

    @property
    def judged(self) -> DSOLStageOne:
        """The weights that validation judges and selection keeps: the moving average when
        ``ema_decay > 0`` (Polyak averaging: the live weights of one step jump from epoch to epoch at
        this learning rate; their average drifts), otherwise the live model."""
        return self.average.module if self.average is not None else self.model

    # -- the loop -----------------------------------------------------------------------
    def fit(self, interrupt_after: int | None = None) -> dict:
        """Train until ``cfg.epochs`` are done (resuming if the run folder has a checkpoint).

        An epoch is a chain of phases, saved at each change, so a resume goes on in the phase it was
        in (localize from its last saved step): localize -> cluster -> classify -> validate -> select.
        With ``rounds="best"`` an epoch is localize -> validate -> select, and one round (cluster ->
        classify) follows the last epoch, for the selected one (``_final_round``). Five resumable
        phases (not EpochRun's train/validate) are why this loop is stage one's own."""
        with self._writing():
            return self._fit(interrupt_after)

    def _fit(self, interrupt_after: int | None) -> dict:
        self._interrupt_after = interrupt_after
        p, lazy = self.progress, self.cfg.rounds == "best"
        while p.epoch < self.cfg.epochs:
            clusters = p.epoch >= self.cfg.cluster_from_epoch and not lazy
            if p.phase == "localize":
                self._localize()
                self._next_phase("cluster" if clusters else "validate")
            if p.phase == "cluster":
                self._cluster(p.epoch)
                self._next_phase("classify")
            if p.phase == "classify":
                self._classify(p.epoch)
                self._next_phase("validate")
            if p.phase == "validate":
                self._validate()
                self._next_phase("select")
            if p.phase == "select":
                self._select()
                p.epoch += 1
                self._next_phase("localize")
        if lazy:
            self._final_round()
        wait_for_main(self.ranks)  # best.pt and dictionary.pt are on disk before any rank moves on (stage two)
        return {"best_val_iou@0.5": self.best, "epochs": p.epoch, "steps": p.global_step}

    def _set_trunk_lr(self, lr: float, scale_lr: float | None = None) -> None:
        set_stage_one_lr(self.optimizer, lr, scale_lr)

    def localize_lr(self, epoch: int, step: int) -> tuple[float, float]:
        """(trunk, scale) learning rates at a localization step: a pure function of the position, so
        a resumed run follows the same schedule without any scheduler state. Both decays are for the
        trunk only: the map's one scale keeps its full rate after the warm-up."""
        cfg = self.cfg
        per_epoch = len(self.train_set) // cfg.batch_size
        done, total = epoch * per_epoch + step, cfg.epochs * per_epoch
        if done < cfg.warmup_steps:
            warm = cfg.lr * (done + 1) / cfg.warmup_steps
            return warm, warm
        if cfg.lr_schedule == "constant":
            return cfg.lr, cfg.lr
        if cfg.lr_schedule == "step":
            return (cfg.lr / 10 if epoch >= cfg.decay_epoch else cfg.lr), cfg.lr
        progress = (done - cfg.warmup_steps) / max(total - cfg.warmup_steps, 1)
        return cfg.lr * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))), cfg.lr

    def _localize(self) -> None:
        p, cfg = self.progress, self.cfg
        batches = batch_order(len(self.train_set), cfg.batch_size, cfg.seed, p.epoch, 0)
        self.train_set.set_epoch(p.epoch * 100)
        self.model.train()
        with self._bar(len(batches), p.step, "localize") as bar:
            for batch in iterate(self.train_set, self._my_share(batches), p.step):
                self._set_trunk_lr(*self.localize_lr(p.epoch, p.step))
                stats = self.localize_step(to_device(batch, self.device))
                record = {"epoch": p.epoch, "phase": "localize", "step": p.step,
                          "lr": self.optimizer.param_groups[0]["lr"]}
                self._record(f"epoch {p.epoch}, localize step {p.step}", record, stats, bar, ("loss", "match_acc"))

    def localize_step(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """One step of the matching task on a batch (on the device); its statistics stay there."""
        cfg = self.cfg
        with autocast(self.device):
            out = self._encode_global_batch(batch)
            labels, avoid = batch["label"], cfg.avoid_same_class
            if cfg.avoid_same_cluster and self.pseudo_labels is not None:  # the last round's clusters
                labels, avoid = self.pseudo_labels.to(self.device)[batch["index"]], True
            loss, stats = stage_one_loss(self.model, out, labels, avoid, cfg.negatives)
        optimizer_step(loss, [self.optimizer], self.scaler)
        if self.average is not None:  # w_avg <- d w_avg + (1 - d) w, buffers (BatchNorm) too
            self.average.update_parameters(self.model)
        return stats | {"scale": self.model.scale.detach().clone()}

    def _encode_global_batch(self, batch: dict[str, torch.Tensor]) -> StageOneOutput:
        """Encode this process's clips. Distributed: the embeddings of the *global* batch (gathered
        with gradients), and ``batch``'s labels and indices replaced by the global batch's, so the
        loss and its negatives are those of one process on the whole batch. ``v_fea`` and ``a_fea``
        stay this rank's own (the loss does not use them)."""
        mel = self.log_mel(batch["audio"])
        if not self.ranks.enabled:
            return self.model.encode(batch["image"], mel, self.cfg.mosaic)
        out = self._streams(batch["image"], mel, self.cfg.mosaic)
        for key in ("label", "index"):
            batch[key] = gather_rows(batch[key])
        return dataclasses.replace(out, v_emb=gather_with_grad(out.v_emb), a_emb=gather_with_grad(out.a_emb))

    def _validate(self) -> None:
        """DSOL's IoU@0.5 on the val split, which selects, and the NMI of k-means on the val clips,
        which is only logged (rank 0 measures, the split is small; every rank gets the score)."""
        cfg = self.cfg
        score = torch.tensor([float("-inf")], dtype=torch.float64, device=self.device)
        if self.ranks.is_main:
            val = validate_stage_one(self.judged, self.val_set, self.log_mel, self.device, self.k,
                                     cfg.mask_threshold, cfg.feature_norm, seed=cfg.seed)
            self.log.write(epoch=self.progress.epoch, phase="validate",
                           **{"val_iou@0.5": val["iou@0.5"], "val_auc": val["auc"], "val_nmi": val["nmi"]})
            score[0] = val["iou@0.5"]
        self.val_score = float(broadcast_from_main(score) if self.ranks.enabled else score)

    def _improves(self) -> bool:
        """Whether this epoch's validation beats the best so far (epochs before the first eligible one
        do not count: they have no dictionary or come too early, unless the run never clusters)."""
        cfg, epoch = self.cfg, self.progress.epoch
        eligible = epoch >= cfg.first_eligible_epoch or cfg.epochs <= cfg.cluster_from_epoch
        return eligible and self.val_score > self.best

    def _select(self) -> None:
        """Keep this epoch's model, and the dictionary round that goes with it, if it is the best."""
        if not self._improves():
            return
        self.best, self.best_epoch = self.val_score, self.progress.epoch
        self._save("best", self.judged)
        if self.cfg.rounds == "best":
            return  # its round comes after the last epoch (_final_round), which logs the selection
        if self.round >= 0:
            self._write_round("dictionary.pt")
        self.log.write(epoch=self.progress.epoch, phase="select", best=self.best, round=self.round)

    def load_best(self) -> DSOLStageOne:
        """The model of the best validation epoch (a fresh module on this trainer's device)."""
        payload = self.ckpt.load("best", self.device)
        model = build_stage_one(dataclasses.replace(self.cfg, imagenet=False), self.k).to(self.device)
        model.load_state_dict(payload["model"])
        return model.eval()


__all__ = ["StageOneConfig", "STAGE_ONE_PRESETS", "StageOneTrainer", "Interrupted", "build_stage_one"]
