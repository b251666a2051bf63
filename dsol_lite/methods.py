"""Every localization method behind one interface, trained by one trainer.

Notebook: 06_method_comparison.

A ``Method`` says how to build its network on the shared ResNet-18 pair and how to compute
its loss on a batch of single-source clips; ``PeerTrainer`` does the rest (resume, progress,
checkpoints, selection on the validation split) for all of them. ``get_method("fnac")``;
``METHODS`` lists them.

DSOL appears here with its stage-one *localization* objective only (what single-source
localization learns from); its dictionary and stage two live in ``stage_one`` / ``stage_two``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from dsol_lite.config import default_device
from dsol_lite.data.audio import AudioConfig, LogMel, time_shift
from dsol_lite.data.audio_augment import SNR_RANGE_DB, AudioAugment
from dsol_lite.data.datasets import SoloPairs
from dsol_lite.data.images import strong_views
from dsol_lite.data.schema import DatasetManifest
from dsol_lite.data.store import ClipStore
from dsol_lite.errors import ConfigError, check_settings
from dsol_lite.evaluate import localization_maps
from dsol_lite.metrics import dsol_single_source, upsample
from dsol_lite.models import BackbonePair, DSOLStageOne
from dsol_lite.models.backbones import check_mosaic
from dsol_lite.models.peers import AlignmentNet, AVGNNet, ContrastiveNet
from dsol_lite.objectives import stage_one_loss
from dsol_lite.objectives.peers import alignment_loss, avgn_loss, ezvsl_loss, fnac_loss
from dsol_lite.training import (EpochRun, autocast, grad_scaler, batch_order, iterate, optimizer_step,
                                seed_everything, settings_fingerprint, to_device, world_fingerprint)

_NOT_IN_FINGERPRINT = ("checkpoint_every", "prepared")
_OWN_PREFIX = {"dsol": "dsol_", "fnac": "fnac_", "alignment": "align_", "avgn": "avgn_"}  # method -> its settings


@dataclass(frozen=True)
class PeerConfig:
    """One method's training settings; the method-specific ones are prefixed with its name."""

    method: str = "ezvsl"
    width: int = 64
    image_size: int = 224
    embed_dim: int = 128
    batch_size: int = 32
    epochs: int = 15
    steps_per_epoch: int | None = None  # None: one pass over the training clips; fewer for short comparisons
    lr: float = 1e-4
    weight_decay: float = 1e-4
    imagenet: bool = False
    tau: float | None = None  # None: the method's own (0.03 EZ-VSL/FNAC/AVGN, 0.07 alignment)
    dsol_negatives: str = "all"
    dsol_scale_lr_mult: float = 10.0
    fnac_weights: tuple[float, float, float] = (100.0, 100.0, 100.0)
    fnac_warmup_epochs: int = 5
    fnac_dropout: float = 0.9
    align_epsilon: float = 0.65
    align_tau_mask: float = 0.03
    align_nn_views: bool = False  # add each clip's nearest neighbour (by the model's own audio) as a view
    avgn_layers: int = 1
    avgn_heads: int = 4
    avgn_weights: tuple[float, float] = (1.0, 1.0)  # token classification, class prediction
    mosaic: bool = False  # training frames seen 2 x 2 in one picture (BackbonePair.visual), for every method
    noise_aug: float = 0.0  # fraction of training clips that hear background noise (data.audio_augment)
    noise_snr_db: tuple[float, float] = SNR_RANGE_DB  # the range its SNR is drawn from, in dB
    offscreen_aug: float = 0.0  # fraction that also hear another clip's instrument, not in view
    seed: int = 0
    checkpoint_every: int = 100
    prepared: str | None = None  # a prepared cache of the dataset (dsol-lite cache) at image_size

    def validate(self) -> "PeerConfig":
        get_method(self.method)
        check_settings(self, positive=("lr", "tau", "dsol_scale_lr_mult", "align_tau_mask"),
                       non_negative=("weight_decay",),
                       at_least={"width": 4, "image_size": 32, "embed_dim": 1, "steps_per_epoch": 1, "seed": 0,
                                 "fnac_warmup_epochs": 0, "avgn_layers": 1, "avgn_heads": 1, "checkpoint_every": 1})
        weights = self.fnac_weights + self.avgn_weights
        if any(not (isinstance(w, (int, float)) and 0 <= w < float("inf")) for w in weights):
            raise ConfigError(f"fnac_weights={self.fnac_weights}, avgn_weights={self.avgn_weights}: loss weights are "
                              f"finite numbers >= 0")
        AudioAugment(self.noise_aug, self.offscreen_aug, self.noise_snr_db)  # raises on impossible values
        if self.mosaic:
            check_mosaic(self.batch_size, self.image_size)
        if not 0 <= self.fnac_dropout < 1:
            raise ConfigError(f"fnac_dropout={self.fnac_dropout}: a dropout rate in [0, 1)")
        if self.batch_size < 2 or self.epochs < 1 or (self.steps_per_epoch is not None and self.steps_per_epoch < 1):
            raise ConfigError(f"batch_size={self.batch_size}, epochs={self.epochs}: contrastive training needs "
                              f"at least 2 clips per batch and 1 epoch")
        if self.imagenet and self.width != 64:
            raise ConfigError(f"imagenet=True needs width=64 (got {self.width})")
        if self.embed_dim % self.avgn_heads:
            raise ConfigError(f"embed_dim={self.embed_dim} must be divisible by avgn_heads={self.avgn_heads}")
        return self

    def fingerprint(self, world: "DatasetManifest | str | Path") -> dict:
        """The settings a checkpoint must match: the shared ones and this method's own (so changing,
        say, FNAC's weights leaves a finished DSOL run usable)."""
        others = tuple(p for m, p in _OWN_PREFIX.items() if m != self.method)
        theirs = tuple(f.name for f in dataclasses.fields(self) if f.name.startswith(others))
        # runs made without these options still resume
        off = {"mosaic": False, "noise_aug": 0.0, "offscreen_aug": 0.0, "noise_snr_db": SNR_RANGE_DB}
        return settings_fingerprint(self, _NOT_IN_FINGERPRINT + theirs, off) | {"world": world_fingerprint(world)}


LossFn = Callable[[nn.Module, dict, LogMel, PeerConfig, int], tuple[torch.Tensor, dict[str, float]]]


@dataclass(frozen=True)
class Method:
    name: str
    title: str
    idea: str
    build: Callable[[PeerConfig, int], nn.Module]
    loss: LossFn
    uses_labels: bool = False  # weak supervision: the world's class labels
    per_source: str = ""  # why its network cannot give one map per sounding source ("" = it can)


def _backbones(cfg: PeerConfig) -> BackbonePair:
    return BackbonePair(cfg.width, imagenet=cfg.imagenet)


def _dsol_loss(model, batch, log_mel, cfg, epoch):
    out = model.encode(batch["image"], log_mel(batch["audio"]), cfg.mosaic)
    return stage_one_loss(model, out, negatives=cfg.dsol_negatives)


def _ezvsl_loss(model, batch, log_mel, cfg, epoch):
    out = model.encode(batch["image"], log_mel(batch["audio"]), cfg.mosaic)
    return ezvsl_loss(out.v_emb, out.a_emb, cfg.tau or 0.03)


def _fnac_loss(model, batch, log_mel, cfg, epoch):
    out = model.encode(batch["image"], log_mel(batch["audio"]), cfg.mosaic)
    weights = cfg.fnac_weights if epoch >= cfg.fnac_warmup_epochs else (0.0, 0.0, 0.0)
    return fnac_loss(out.v_emb, out.a_emb, cfg.tau or 0.03, weights)


def _alignment_loss(model, batch, log_mel, cfg, epoch):
    images, waves = batch["image"], batch["audio"]
    image_views, audio_views = [images, strong_views(images)], [waves, time_shift(waves)]
    outs = [model.encode(im, log_mel(w), cfg.mosaic) for im, w in zip(image_views, audio_views)]
    aligned = [model.align(o) for o in outs]
    visual = [(o.v_emb, v_align) for o, (v_align, _) in zip(outs, aligned)]
    audio = [(o.a_emb, a_align) for o, (_, a_align) in zip(outs, aligned)]
    if cfg.align_nn_views:  # each audio's nearest other clip in the batch, by the model's own audio embedding
        with torch.no_grad():
            sim = outs[0].a_emb @ outs[0].a_emb.T
            sim.fill_diagonal_(-2.0)
            neighbour = sim.argmax(1)
        visual.append((outs[0].v_emb[neighbour], visual[0][1][neighbour]))
    return alignment_loss(visual, audio, cfg.tau or 0.07, cfg.align_epsilon, cfg.align_tau_mask)


def _avgn_loss(model, batch, log_mel, cfg, epoch):
    out = model.encode(batch["image"], log_mel(batch["audio"]), cfg.mosaic)
    return avgn_loss(out.v_emb, out.class_emb, out.token_logits, out.presence_logits, batch["label"],
                     cfg.tau or 0.03, cfg.avgn_weights)


_ONE_MAP = "one map per sound: a mixture's sources are not separated, so no map per source"

METHODS: dict[str, Method] = {m.name: m for m in (
    Method("dsol", "DSOL (stage one)", "is this sound this frame's? BCE on the max of a sigmoid cosine map",
           lambda cfg, k: DSOLStageOne(_backbones(cfg), k, cfg.embed_dim), _dsol_loss,
           per_source="stage one is class-agnostic: DSOL's per-source maps come from stage two (dsol-lite run)"),
    Method("ezvsl", "EZ-VSL", "multiple-instance InfoNCE: the best location of the right frame must beat all others",
           lambda cfg, k: ContrastiveNet(_backbones(cfg), cfg.embed_dim, tau=cfg.tau or 0.03), _ezvsl_loss,
           per_source=_ONE_MAP),
    Method("fnac", "FNAC", "EZ-VSL that stops pushing apart clips whose sounds or frames are alike",
           lambda cfg, k: ContrastiveNet(_backbones(cfg), cfg.embed_dim, cfg.fnac_dropout, cfg.tau or 0.03),
           _fnac_loss,
           per_source=_ONE_MAP),
    Method("alignment", "Cross-modal alignment", "contrast localization and global alignment over augmented views",
           lambda cfg, k: AlignmentNet(_backbones(cfg), cfg.embed_dim, cfg.tau or 0.07), _alignment_loss,
           per_source=_ONE_MAP),
    Method("avgn", "AVGN", "class tokens group the audio; each class's token localizes its object (uses labels)",
           lambda cfg, k: AVGNNet(_backbones(cfg), k, cfg.embed_dim, cfg.avgn_layers, cfg.avgn_heads, cfg.tau or 0.03),
           _avgn_loss,
           uses_labels=True),
)}


def get_method(name: str) -> Method:
    """The method called ``name``; an unknown name lists the valid ones."""
    if name not in METHODS:
        raise ConfigError(f"unknown method {name!r}; choose one of: {', '.join(METHODS)}")
    return METHODS[name]


PEER_PRESETS = {
    # the quick world on a 2-core CPU: a narrow net on 128-px frames at lr 1e-3, 10x DSOL's published rate; the
    # base of dsol-lite compare's equal-budget sweep (dsol_lite.tuning), which then sets tau and the mosaic
    # FNAC's terms at weight 1, not 100: from scratch, at 100 they collapse the visual embeddings to one vector
    # (measured: val IoU@0.5 stuck at 0.035, a constant map, from the first epoch with the terms, 3 seeds of 3;
    # weight 10: best 0.09, weight 1: best 0.13). FNAC's paper starts from ImageNet features, where the
    # visual-visual similarities are informative from the first step.
    "quick": PeerConfig(width=16, image_size=128, epochs=8, lr=1e-3, fnac_weights=(1.0, 1.0, 1.0),
                        fnac_warmup_epochs=2, checkpoint_every=25),
    "full": PeerConfig(epochs=20, batch_size=128),  # from scratch, as DSOL's full preset (imagenet=True downloads)
    # notebook 06's live run: the quick comparison's size with the settings its sweep chose for DSOL and EZ-VSL
    # (the mosaic; tau 0.2, which DSOL does not use; DSOL's scale at 10x the rate), 2 epochs instead of 8;
    # FNAC's terms switch on after 1 epoch so that a student's FNAC run uses them
    "compare-quick": PeerConfig(width=16, image_size=128, epochs=2, lr=1e-3, tau=0.2, mosaic=True,
                                fnac_weights=(1.0, 1.0, 1.0), fnac_warmup_epochs=1, checkpoint_every=25),
}


class PeerTrainer(EpochRun):
    """Train any ``Method`` on the world's single-source clips; ``best.pt`` is chosen on val IoU@0.5."""

    def __init__(self, world: str | Path | ClipStore, run_dir: str | Path, cfg: PeerConfig,
                 device: torch.device | None = None, progress_bar: bool = True) -> None:
        self.cfg, self.run_dir = cfg.validate(), Path(run_dir)
        self.method = get_method(cfg.method)
        self.device = device or default_device()
        self.progress_bar = progress_bar
        self.store = ClipStore.open(world, cfg.prepared, cfg.image_size, self.device)
        kw = {"image_size": cfg.image_size, "seed": cfg.seed, "device": self.device}
        self.train_set = SoloPairs(self.store, "train", train=True, masks=False,
                                   audio_augment=AudioAugment(cfg.noise_aug, cfg.offscreen_aug, cfg.noise_snr_db), **kw)
        self.val_set = SoloPairs(self.store, "val", **kw)
        self.classes = self.train_set.classes
        seed_everything(cfg.seed)
        self.model = self.method.build(cfg, len(self.classes)).to(self.device)
        self.log_mel = LogMel(AudioConfig()).to(self.device)
        fast = [p for n, p in self.model.named_parameters() if n == "scale"]  # DSOL's map scale
        rest = [p for n, p in self.model.named_parameters() if n != "scale"]
        groups = [{"params": rest}] + ([{"params": fast, "lr": cfg.lr * cfg.dsol_scale_lr_mult}] if fast else [])
        self.optimizer = torch.optim.Adam(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.scaler = grad_scaler(self.device)
        self._open_run(self.run_dir, cfg.fingerprint(self.store.manifest), first_phase="train")

    def _optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"model": self.optimizer}

    def fit(self, interrupt_after: int | None = None, until_epoch: int | None = None) -> dict:
        """Train until ``cfg.epochs`` are done, or only the first ``until_epoch`` of them (the same
        steps and schedule; a later ``fit()`` goes on from there), resuming from a checkpoint."""
        position = self._run_epochs(interrupt_after, until_epoch)
        return {"best_val_iou@0.5": self.best, **position}

    def _train_epoch(self) -> None:
        p, cfg = self.progress, self.cfg
        batches = batch_order(len(self.train_set), cfg.batch_size, cfg.seed, p.epoch, 0)[:cfg.steps_per_epoch]
        self.train_set.set_epoch(p.epoch * 100)
        self.model.train()
        with self._bar(len(batches), p.step, self.method.name) as bar:
            for batch in iterate(self.train_set, batches, p.step):
                batch = to_device(batch, self.device)
                with autocast(self.device):
                    loss, stats = self.method.loss(self.model, batch, self.log_mel, cfg, p.epoch)
                optimizer_step(loss, [self.optimizer], self.scaler)
                self._record(f"{cfg.method}: epoch {p.epoch}, step {p.step}",
                             {"epoch": p.epoch, "phase": "train", "step": p.step}, stats, bar)

    def _validate(self) -> None:
        p = self.progress
        maps, gt = localization_maps(self.model, self.val_set, self.log_mel, self.device)
        val = dsol_single_source(upsample(maps, gt.shape[-1]), gt)
        self.log.write(epoch=p.epoch, phase="validate", **{"val_iou@0.5": val["iou@0.5"], "val_auc": val["auc"]})
        if val["iou@0.5"] > self.best:
            self.best = val["iou@0.5"]
            self._save("best")
            self.log.write(epoch=p.epoch, phase="select", best=self.best)

    def load_best(self) -> nn.Module:
        payload = self.ckpt.load("best", self.device)
        model = self.method.build(dataclasses.replace(self.cfg, imagenet=False), len(self.classes)).to(self.device)
        model.load_state_dict(payload["model"])
        return model.eval()


__all__ = ["PeerConfig", "Method", "METHODS", "get_method", "PEER_PRESETS", "PeerTrainer"]
