"""The clustering rounds of DSOL stage one: what turns localized objects into a dictionary.

Notebook: 03_object_dictionary.

A round, for one epoch's model: (1) *cluster*: extract the object feature of every training clip
(``evaluate.extract_object_features``), run seeded k-means, and keep the cluster means as the
dictionary; (2) *classify*: fresh K-way visual and audio heads learn the pseudo-labels, with the
backbones (DSOL) or on the extracted features alone (``class_lr=0``, a frozen trunk). The round's
dictionary and audio head are saved together (``DictionaryRound``), since stage two needs both
from the same round. With ``rounds="best"`` the only round is ``_final_round``, after training.

``DictionaryRounds`` is the part of ``stage_one.StageOneTrainer`` that does this; it uses the
trainer's model, datasets, optimizers, progress and checkpoints.
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F

from dsol_lite.dictionary import DictionaryRound, build_dictionary, cluster_report, run_kmeans
from dsol_lite.distributed import (broadcast_from_main, classifier_part, gather_rows, mean_over_ranks,
                                   wait_for_main, wrap)
from dsol_lite.evaluate import extract_object_features
from dsol_lite.training import autocast, batch_order, iterate, optimizer_step, to_device


class DictionaryRounds:
    """Stage one's clustering rounds, mixed into ``StageOneTrainer``. The trainer provides the model,
    ``feature_set`` and ``train_set``, ``log_mel``, the trunk ``optimizer``, ``progress``, checkpoints
    and the round's state: ``round``, ``dictionary``, ``pseudo_labels``, ``round_stats``,
    ``best_epoch`` and ``_head_inputs`` (the features the heads learn from, for a frozen trunk)."""

    def _gather(self, x: torch.Tensor) -> torch.Tensor:
        """Every rank's rows, in rank order (CPU tensors travel through this rank's device)."""
        return gather_rows(x.to(self.device)).cpu() if self.ranks.enabled else x

    def extract(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
        """Object features, audio features and true labels of every training clip (eval mode).
        Distributed: each rank extracts a contiguous share of the clips, then all are gathered."""
        n, r = len(self.feature_set), self.ranks
        items = range(n * r.rank // r.world_size, n * (r.rank + 1) // r.world_size)
        f = extract_object_features(self.model, self.feature_set, self.log_mel, self.device,
                                    self.cfg.mask_threshold, self.cfg.feature_norm, items=items)
        objects, audio, visual, labels = (self._gather(x) for x in (f.objects, f.audio, f.visual, f.labels))
        empty = int(self._gather(torch.tensor([f.empty])).sum())
        self._head_inputs = (visual, audio)  # what the pseudo-label heads see, for a frozen trunk
        return objects, audio, labels, empty

    def _cluster(self, epoch: int) -> None:
        """Extract, cluster and start a round for ``epoch`` (its k-means and head seeds)."""
        start = time.perf_counter()
        feats, _, labels, empty = self.extract()
        if self.ranks.enabled:  # rank 0 clusters, every rank gets its assignment
            assign = torch.zeros(len(feats), dtype=torch.long, device=self.device)
            if self.ranks.is_main:
                assign[:] = torch.as_tensor(run_kmeans(feats, self.k, seed=self.cfg.seed * 1000 + epoch))
            assign = broadcast_from_main(assign).cpu().numpy()
        else:
            assign = run_kmeans(feats, self.k, seed=self.cfg.seed * 1000 + epoch)
        report = cluster_report(assign, labels.numpy(), self.k, len(self.classes))
        self.round_stats = {k: report[k] for k in ("nmi", "purity", "hungarian_acc")}
        self.round = epoch
        self.dictionary = build_dictionary(feats, assign, self.k)
        self.pseudo_labels = torch.as_tensor(assign, dtype=torch.long)
        self.model.reset_classifiers(self.k, seed=self.cfg.seed * 1000 + epoch)
        self._new_heads_optimizer()
        self._classifier = None  # new heads: a new DDP wrapper
        self.log.write(epoch=epoch, phase="cluster", nmi=report["nmi"], purity=report["purity"],
                       hungarian_acc=report["hungarian_acc"], empty_masks=empty,
                       seconds=round(time.perf_counter() - start, 2))

    def _new_heads_optimizer(self) -> None:
        heads = list(self.model.v_classifier.parameters()) + list(self.model.a_classifier.parameters())
        self.heads_optimizer = torch.optim.Adam(heads, lr=self.cfg.heads_lr, weight_decay=self.cfg.weight_decay)

    def _classify(self, epoch: int) -> None:
        """Fresh heads learn the pseudo-labels of the round of ``epoch`` (its batch order)."""
        p, cfg = self.progress, self.cfg
        per_pass = len(self.train_set) // cfg.batch_size
        with self._bar(per_pass * cfg.class_passes, p.step, "classify", epoch) as bar:  # the round's epoch
            while p.step < per_pass * cfg.class_passes:
                n_pass, start = divmod(p.step, per_pass)
                batches = batch_order(len(self.train_set), cfg.batch_size, cfg.seed, epoch, 1 + n_pass)
                if cfg.class_lr == 0:
                    self._classify_heads_only(batches[start:], bar)
                else:
                    self._classify_with_trunk(batches, start, n_pass, bar)
        if self.dictionary is not None:
            self._write_round(f"dictionary_round{self.round:02d}.pt")

    def _classify_step(self, v_logits: torch.Tensor, a_logits: torch.Tensor, target: torch.Tensor,
                       optimizers: list[torch.optim.Optimizer], bar) -> None:
        p = self.progress
        loss = F.cross_entropy(v_logits.float(), target) + F.cross_entropy(a_logits.float(), target)
        with torch.no_grad():
            stats = {"loss": loss.detach(), "visual_acc": (v_logits.argmax(1) == target).float().mean(),
                     "audio_acc": (a_logits.argmax(1) == target).float().mean()}
        if self.ranks.enabled:  # each rank saw its share: report the global batch
            stats = mean_over_ranks(stats, self.device)
        optimizer_step(loss, optimizers, self.scaler)
        self._record(f"epoch {p.epoch}, classify step {p.step}", {"epoch": p.epoch, "phase": "classify",
                                                                  "step": p.step}, stats, bar)

    def _classify_heads_only(self, batches: list[list[int]], bar) -> None:
        """Frozen trunk: the heads learn on the features extracted for clustering (no second pass
        over the images; BatchNorm statistics stay as they are). Distributed: every rank has all the
        features and trains the same heads on the same global batches; rank 0's are broadcast at
        the end, so the ranks cannot drift apart."""
        if self._head_inputs is None:  # resumed mid-phase: the frozen trunk gives the same features again
            self.extract()
        visual, audio = (x.to(self.device) for x in self._head_inputs)
        labels = self.pseudo_labels.to(self.device)
        for idx in batches:
            idx = torch.tensor(idx, device=self.device)
            self._classify_step(self.model.v_classifier(visual[idx]), self.model.a_classifier(audio[idx]),
                                labels[idx], [self.heads_optimizer], bar)
        if self.ranks.enabled:
            for t in [*self.model.v_classifier.parameters(), *self.model.a_classifier.parameters()]:
                t.data = broadcast_from_main(t.data)

    def _classify_with_trunk(self, batches: list[list[int]], start: int, n_pass: int, bar) -> None:
        """DSOL: heads and backbones learn on the pseudo-labels, with augmented clips."""
        p, cfg = self.progress, self.cfg
        self._set_trunk_lr(cfg.lr if cfg.class_lr is None else cfg.class_lr)
        self.model.train()
        self.train_set.set_epoch(p.epoch * 100 + 1 + n_pass)
        classify = self.model.classify
        if self.ranks.enabled:  # DDP over what this phase trains: the backbones and the new heads
            self._classifier = self._classifier or wrap(classifier_part(self.model), self.device)
            classify = self._classifier
        for batch in iterate(self.train_set, self._my_share(batches), start):
            batch = to_device(batch, self.device)
            with autocast(self.device):
                v_logits, a_logits = classify(batch["image"], self.log_mel(batch["audio"]))
            self._classify_step(v_logits, a_logits, self.pseudo_labels.to(self.device)[batch["index"]],
                                [self.optimizer, self.heads_optimizer], bar)

    def _current_round(self) -> DictionaryRound:
        """This round's dictionary with the audio head trained on its pseudo-labels."""
        head = {k: v.detach().cpu().clone() for k, v in self.model.a_classifier.state_dict().items()}
        return DictionaryRound(self.round, self.dictionary, head, self.pseudo_labels, dict(self.round_stats))

    def _write_round(self, name: str) -> None:
        """Save this round in the run folder; rank 0 alone writes (every rank holds the same round),
        as ``_save`` does for checkpoints."""
        if self.ranks.is_main:
            self._current_round().save(self.run_dir / name)

    def _final_round(self) -> None:
        """``rounds="best"``: after the last epoch, the selected epoch's model gets its clustering round,
        seeded as it would have been in that epoch, so ``best.pt`` and ``dictionary.pt`` are those of
        ``rounds="every"``. The trainer then holds the selected model; phases "cluster" -> "classify"
        -> "done" at ``epoch == cfg.epochs`` (resumable like any other)."""
        p, epoch = self.progress, self.best_epoch
        if p.phase == "localize":  # training just ended
            if epoch < self.cfg.cluster_from_epoch or self.round == epoch:
                return  # no eligible epoch (the run never clusters), or the round exists (an older run)
            wait_for_main(self.ranks)  # rank 0 has just written best.pt: the others read it after that
            self.model.load_state_dict(self.ckpt.load("best", self.device)["model"])
            self._next_phase("cluster")
        if p.phase == "cluster":
            self._cluster(epoch)
            self._next_phase("classify")
        if p.phase == "classify":
            self._classify(epoch)
            self._save("best")  # the selected model with the heads of its round
            self._write_round("dictionary.pt")
            self.log.write(epoch=epoch, phase="select", best=self.best, round=self.round)
            self._next_phase("done")


__all__ = ["DictionaryRounds"]
