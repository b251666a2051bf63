"""DSOL stage two: class-aware maps matched to the audio's category distribution.

Notebook: 04_stage_two.

Starting from stage one's best checkpoint and the dictionary of the same clustering round, the
network learns on multi-source scenes (DSOL's 2x2 tiles and the world's duet and cocktail
scenes) to make the categories it *sees sounding* (class-aware maps x localization map,
averaged) agree with the categories a frozen copy of stage one *hears* in the mixture (its
audio classifier), while a localization BCE keeps stage one's skill. Each epoch ends with
DSOL's multi-source CIoU@0.3 on the validation split, which picks ``best.pt``.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch

from dsol_lite.config import default_device
from dsol_lite.data.audio import AudioConfig, LogMel
from dsol_lite.data.datasets import MULTI_SOURCE_KINDS, MultiSourceScenes, SoloPairs
from dsol_lite.data.schema import DatasetManifest, read_manifest
from dsol_lite.data.store import ClipStore
from dsol_lite.dictionary import DictionaryRound, check_pairing, cluster_report
from dsol_lite.errors import ConfigError, DataError, check_settings
from dsol_lite.evaluate import class_maps_at_image, stage_two_maps
from dsol_lite.metrics import dsol_multi_source
from dsol_lite.models import DSOLStageOne, DSOLStageTwo
from dsol_lite.distributed import (Ranks, check_batch_size, gather_with_grad, mean_over_ranks, stage_two_part,
                                   sync_batchnorm, wrap)
from dsol_lite.objectives import stage_two_loss
from dsol_lite.objectives.dsol import stage_two_kl, stage_two_localization
from dsol_lite.stage_one import StageOneConfig, build_stage_one
from dsol_lite.training import (EpochRun, Interrupted, autocast, grad_scaler, batch_order, config_from_settings,
                                iterate, optimizer_step, read_checkpoint, seed_everything, settings_fingerprint,
                                to_device, world_fingerprint)

_NOT_IN_FINGERPRINT = ("checkpoint_every", "prepared")


@dataclass(frozen=True)
class StageTwoConfig:
    """DSOL's stage-two settings (defaults = the paper's); see ``STAGE_TWO_PRESETS``."""

    batch_size: int = 32
    epochs: int = 5
    warmup_epochs: int = 0  # first epochs without the silent-object filter (DSOL's suggested pre-training)
    filter_silent: bool = True  # class-aware maps x localization map
    lr: float = 1e-4
    weight_decay: float = 1e-4
    loc_weight: float = 0.5
    kinds: tuple[str, ...] = MULTI_SOURCE_KINDS  # training scenes: 2x2 tiles, duets, cocktails
    finetune_kinds: tuple[str, ...] = ()  # then train on these scenes instead (MUSIC: 2x2 tiles, then real duets)
    finetune_from: int = 0  # ... from this epoch on
    seed: int = 0
    eval_size: int | None = None  # multi-source validation and test (None: stage one's); see evaluation_size
    checkpoint_every: int = 100
    prepared: str | None = None  # a prepared cache of the dataset (dsol-lite cache)

    def validate(self) -> "StageTwoConfig":
        check_settings(self, positive=("lr",), non_negative=("weight_decay", "loc_weight"),
                       at_least={"epochs": 1, "warmup_epochs": 0, "finetune_from": 0, "seed": 0,
                                 "checkpoint_every": 1, "eval_size": 32})
        if self.batch_size < 2:
            raise ConfigError(f"batch_size={self.batch_size}: negatives need at least 2 scenes per batch")
        if self.filter_silent and self.warmup_epochs >= self.epochs:
            raise ConfigError(f"warmup_epochs={self.warmup_epochs} with epochs={self.epochs}: only epochs after the "
                              f"warm-up (with the silent-object filter) are validated and kept, so at least one "
                              f"must follow it; lower warmup_epochs or raise epochs")
        for name in ("kinds", "finetune_kinds"):
            kinds = getattr(self, name)
            if not isinstance(kinds, tuple):
                raise ConfigError(f"{name}={kinds!r}: give a tuple of scene kinds, e.g. ('cocktail',)")
            if set(kinds) - set(MULTI_SOURCE_KINDS) or (name == "kinds" and not kinds):
                raise ConfigError(f"{name}={kinds}: choose from {MULTI_SOURCE_KINDS}")
        if self.finetune_kinds and not 0 < self.finetune_from < self.epochs:
            raise ConfigError(f"finetune_from={self.finetune_from}: with finetune_kinds, fine-tuning starts "
                              f"after the first epoch and before the last (epochs={self.epochs})")
        return self

    def evaluation_size(self, stage_one: StageOneConfig) -> int:
        """The input size of stage two's validation and of the multi-source test scenes.

        Stage one's evaluation size unless set: the stage that is scored picks the size that suits it
        on validation (the quick preset scores solo scenes at 128 px and multi-source scenes at 160)."""
        return self.eval_size or stage_one.evaluation_size

    def kinds_at(self, epoch: int) -> tuple[str, ...]:
        """The scene kinds trained on in ``epoch``."""
        return self.finetune_kinds if self.finetune_kinds and epoch >= self.finetune_from else self.kinds


STAGE_TWO_PRESETS = {
    # DSOL's rate; 6 epochs; the silent-object filter from the first epoch (a warm-up without it validated lower
    # on the weakest of three runs); multi-source scenes validated and scored at the world's native 160 px, where
    # they validated better than at stage one's 128 (docs/results.md)
    "quick": StageTwoConfig(epochs=6, warmup_epochs=0, eval_size=160, checkpoint_every=25),
    # the same at the full world's native 256 px
    "full": StageTwoConfig(epochs=6, warmup_epochs=0, eval_size=256),
    # DSOL: "a few epochs", the first without the silent-object filter, as its code suggests
    "paper": StageTwoConfig(epochs=5, warmup_epochs=1),
    # DSOL on MUSIC: 2x2 scenes composed from solo clips (prepare-music --grid2x2), then the real duets;
    # the paper gives "a few epochs", the split 3 + 2 is ours
    "music": StageTwoConfig(epochs=5, warmup_epochs=1, kinds=("grid2x2",), finetune_kinds=("duet",), finetune_from=3),
}


def distributed_stage_two_loss(ddp: torch.nn.Module, model: DSOLStageTwo, images: torch.Tensor,
                               spec: torch.Tensor, audio_probs: torch.Tensor, filter_silent: bool = True,
                               loc_weight: float = 0.5) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Stage two's loss on one rank's share of the global batch (``ddp``: DDP over
    ``distributed.stage_two_part(model)``). The KL term is this rank's own scenes' mean (DDP's
    average over the ranks makes it the global batch mean); the localization term is computed on
    the embeddings of the whole batch (gathered), so its negatives are those of one process."""
    out = ddp(images, spec, filter_silent)
    s1 = out.stage_one
    every = dataclasses.replace(s1, v_emb=gather_with_grad(s1.v_emb), a_emb=gather_with_grad(s1.a_emb))
    kl = stage_two_kl(out.visual_logits, audio_probs)
    loc = stage_two_localization(model.net, every)
    agree = (out.visual_logits.argmax(1) == audio_probs.argmax(1)).float().mean()
    stats = mean_over_ranks({"kl": kl.detach(), "category_agreement": agree}, images.device) | {"loc": loc.detach()}
    stats["loss"] = stats["kl"] + loc_weight * stats["loc"]
    return kl + loc_weight * loc, stats


def load_stage_one(run_dir: str | Path, device: torch.device | str = "cpu"
                   ) -> tuple[StageOneConfig, DSOLStageOne, DictionaryRound]:
    """Stage one's configuration, best model and dictionary round, checked to belong together."""
    run_dir = Path(run_dir)
    best, dictionary = run_dir / "best.pt", run_dir / "dictionary.pt"
    missing = ("stage-one result is missing: train stage one first "
               "(`dsol-lite run`, or StageOneTrainer(...).fit() as in notebook 02)")
    if not dictionary.is_file():
        raise DataError(dictionary, missing)
    payload = read_checkpoint(best, device, missing)
    cfg = config_from_settings(StageOneConfig, payload["settings"])
    rnd = DictionaryRound.load(dictionary)
    model = build_stage_one(dataclasses.replace(cfg, imagenet=False), rnd.dictionary.shape[0]).to(device)
    model.load_state_dict(payload["model"])
    check_pairing(rnd, model.a_classifier.state_dict())
    return cfg, model.eval(), rnd


def load_stage_two(path: str | Path, stage_one_cfg: StageOneConfig, rnd: DictionaryRound,
                   device: torch.device | str = "cpu") -> tuple[StageTwoConfig, DSOLStageTwo]:
    """A stage-two checkpoint (``best.pt`` or ``last.pt``): the settings it was trained with (those
    left out of its fingerprint, such as worker counts, at their defaults) and an eval-mode model."""
    path = Path(path)
    payload = read_checkpoint(path, device, "stage-two checkpoint is missing: train stage two first "
                                            "(`dsol-lite run`, or StageTwoTrainer(...).fit() as in notebook 04)")
    cfg = config_from_settings(StageTwoConfig, payload["settings"])
    return cfg, _stage_two_from_state(payload["model"], path, stage_one_cfg, rnd, device)


def _stage_two_from_state(state: dict, path: Path, stage_one_cfg: StageOneConfig, rnd: DictionaryRound,
                          device: torch.device | str) -> DSOLStageTwo:
    stage_one = build_stage_one(dataclasses.replace(stage_one_cfg, imagenet=False), rnd.dictionary.shape[0])
    model = DSOLStageTwo(stage_one, rnd.dictionary).to(device)
    if not torch.equal(state["dictionary"].cpu(), rnd.dictionary.float().cpu()):
        raise ConfigError(f"{path}: stage two was trained with another dictionary than round {rnd.round}")
    model.load_state_dict(state)
    return model.eval()


def cluster_to_class(world: str | Path | ClipStore, rnd: DictionaryRound) -> tuple[dict[int, int], dict]:
    """Hungarian cluster -> class map from the stage-one training clips (for evaluation only)."""
    train = SoloPairs(world, "train")
    labels = train.labels()
    if len(labels) != len(rnd.pseudo_labels):
        raise DataError(train.manifest.root, f"{len(labels)} training clips but dictionary round {rnd.round} has "
                                             f"{len(rnd.pseudo_labels)} pseudo-labels: not the world stage one used")
    classes = train.classes
    report = cluster_report(rnd.pseudo_labels.numpy(), labels, rnd.dictionary.shape[0], len(classes))
    return report["mapping"], report


def check_training_scenes(world: str | Path | DatasetManifest, cfg: StageTwoConfig, ranks: Ranks = Ranks()) -> None:
    """Refuse a batch that the ranks cannot share evenly, or larger than the world's training scenes
    of the kinds ``cfg`` trains on. Reads only the manifest (``world``: it, or the dataset folder),
    so ``dsol-lite run`` can say it before training stage one for minutes."""
    check_batch_size(cfg.batch_size, ranks)
    manifest = world if isinstance(world, DatasetManifest) else read_manifest(world)
    for kinds in dict.fromkeys((cfg.kinds, cfg.finetune_kinds or cfg.kinds)):
        n = len(manifest.select("train", kinds))
        if n < cfg.batch_size:
            raise ConfigError(f"stage two: batch_size={cfg.batch_size} is larger than the {n} training scenes of "
                              f"kinds {kinds} in {manifest.root}")


class StageTwoTrainer(EpochRun):
    """Stage two in one process, or in several (``ranks``, as stage one: ``dsol_lite.distributed``)."""

    def __init__(self, world: str | Path | ClipStore, run_dir: str | Path, stage_one_dir: str | Path,
                 cfg: StageTwoConfig, device: torch.device | None = None, progress_bar: bool = True,
                 ranks: Ranks = Ranks()) -> None:
        self.cfg, self.run_dir = cfg.validate(), Path(run_dir)
        self.device = device or default_device()
        self.progress_bar, self.ranks = progress_bar, ranks
        self.stage_one_cfg, stage_one, self.round = load_stage_one(stage_one_dir, self.device)
        size, self.eval_size = self.stage_one_cfg.image_size, cfg.evaluation_size(self.stage_one_cfg)
        if cfg.prepared is not None and self.eval_size != size:
            raise ConfigError(f"stage two: eval_size={self.eval_size} with a prepared cache: the cache holds frames "
                              f"of one size ({size} px); set eval_size to none or to {size}")
        self.store = ClipStore.open(world, cfg.prepared, size, self.device)  # the one stage one used, if open
        manifest = self.store.manifest
        check_training_scenes(manifest, cfg, ranks)
        self.train_sets = {kinds: MultiSourceScenes(self.store, "train", kinds, image_size=size, train=True,
                                                    seed=cfg.seed, device=self.device, masks=False)
                           for kinds in {cfg.kinds, cfg.finetune_kinds or cfg.kinds}}
        self.val_set = MultiSourceScenes(self.store, "val", image_size=self.eval_size, device=self.device)
        self.train_set = self.train_sets[cfg.kinds]
        self.mapping, _ = cluster_to_class(self.store, self.round)
        self.classes = self.train_set.classes
        seed_everything(cfg.seed)
        self.teacher = copy.deepcopy(stage_one).eval().requires_grad_(False)  # hears the mixture, frozen
        self.model = DSOLStageTwo(stage_one, self.round.dictionary).to(self.device)
        if ranks.enabled:  # before the optimizer: SyncBatchNorm brings new modules
            sync_batchnorm(self.model, self.device)
        self.log_mel = LogMel(AudioConfig()).to(self.device)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.scaler = grad_scaler(self.device)
        self.best = float("-inf")
        fingerprint = settings_fingerprint(cfg, _NOT_IN_FINGERPRINT, {"finetune_kinds": (), "finetune_from": 0,
                                                                     "eval_size": None})
        fingerprint["world"] = world_fingerprint(manifest)
        fingerprint["dictionary"] = f"round {self.round.round}:{self.round.digest}"
        self._open_run(self.run_dir, fingerprint, first_phase="train")
        self._ddp = None
        if ranks.enabled:  # DDP over what stage two trains (stage one's classifier heads are not used)
            self._ddp = wrap(stage_two_part(self.model), self.device)

    def _optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"all": self.optimizer}

    def filtering(self, epoch: int) -> bool:
        """Whether the silent-object filter is on in this epoch (off during the warm-up)."""
        return self.cfg.filter_silent and epoch >= self.cfg.warmup_epochs

    @torch.no_grad()
    def audio_categories(self, log_mel: torch.Tensor) -> torch.Tensor:
        """The frozen stage-one audio classifier's category distribution of each mixture."""
        return torch.softmax(self.teacher.a_classifier(self.teacher.backbones.audio(log_mel)).float(), dim=1)

    def fit(self, interrupt_after: int | None = None) -> dict:
        """Train until ``cfg.epochs`` are done (resuming if the run folder has a checkpoint)."""
        position = self._run_epochs(interrupt_after)
        return {"best_val_ciou@0.3": self.best, **position}

    def _train_epoch(self) -> None:
        p, cfg = self.progress, self.cfg
        self.train_set = self.train_sets[cfg.kinds_at(p.epoch)]
        batches = batch_order(len(self.train_set), cfg.batch_size, cfg.seed, p.epoch, 0)
        self.train_set.set_epoch(p.epoch)
        self.model.train()
        filter_silent = self.filtering(p.epoch)
        with self._bar(len(batches), p.step, "stage two") as bar:
            for batch in iterate(self.train_set, self._my_share(batches), p.step):
                stats = self.train_step(to_device(batch, self.device), filter_silent)
                self._record(f"epoch {p.epoch}, stage-two step {p.step}",
                             {"epoch": p.epoch, "phase": "train", "step": p.step, "filter_silent": filter_silent},
                             stats, bar, ("loss", "category_agreement"))

    def train_step(self, batch: dict[str, torch.Tensor], filter_silent: bool = True) -> dict[str, torch.Tensor]:
        """One step on a batch of scenes (on the device); its statistics stay there."""
        spec = self.log_mel(batch["audio"])
        target = self.audio_categories(spec)
        with autocast(self.device):
            if self._ddp is None:
                out = self.model(batch["image"], spec, filter_silent=filter_silent)
                loss, stats = stage_two_loss(self.model, out, target, self.cfg.loc_weight)
            else:
                loss, stats = distributed_stage_two_loss(self._ddp, self.model, batch["image"], spec, target,
                                                         filter_silent, self.cfg.loc_weight)
        optimizer_step(loss, [self.optimizer], self.scaler)
        return stats

    def evaluate(self, dataset: MultiSourceScenes, model: DSOLStageTwo | None = None) -> dict:
        """DSOL's multi-source protocol on a dataset (class maps from the Hungarian mapping)."""
        maps = stage_two_maps(model or self.model, dataset, self.log_mel, self.device)
        return dsol_multi_source(class_maps_at_image(maps, self.mapping, len(self.classes)), maps["class_boxes"],
                                 maps["sounding"])

    def _validate(self) -> None:
        """DSOL's multi-source CIoU@0.3 on the val split keeps the best checkpoint (rank 0 only)."""
        p = self.progress
        if not self.ranks.is_main:
            self._best_from_main()
            return
        val = self.evaluate(self.val_set)
        self.log.write(epoch=p.epoch, phase="validate", **{"val_ciou@0.3": val["ciou@0.3"], "val_auc": val["auc"],
                                                           "val_nsa": val["nsa"]})
        # the filter changes what the maps mean: only filtered epochs compete (unless it is switched off)
        eligible = self.filtering(p.epoch) or not self.cfg.filter_silent
        if eligible and val["ciou@0.3"] > self.best:
            self.best = val["ciou@0.3"]
            self._save("best")
            self.log.write(epoch=p.epoch, phase="select", best=self.best)
        self._best_from_main()

    def load_best(self) -> DSOLStageTwo:
        """The model of the best validation epoch (a fresh module on this trainer's device)."""
        payload = self.ckpt.load("best", self.device)  # also checks the configuration fingerprint
        return _stage_two_from_state(payload["model"], self.ckpt.path("best"), self.stage_one_cfg, self.round,
                                     self.device)


__all__ = ["StageTwoConfig", "STAGE_TWO_PRESETS", "StageTwoTrainer", "Interrupted", "distributed_stage_two_loss",
           "load_stage_one", "load_stage_two", "cluster_to_class", "check_training_scenes"]
