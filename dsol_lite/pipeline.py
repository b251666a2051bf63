"""The main job: world -> stage one -> dictionary -> stage two -> evaluation -> report.

Notebook: 05_evaluation (``evaluate_run``); the README's first command (``dsol-lite run``).

    dsol-lite run                       # quick preset (on any device); writes runs/quick/

Every stage resumes: the world is generated only if missing, each trainer continues from its
last checkpoint, and a finished stage returns at once. The run folder holds ``stage_one/``,
``stage_two/`` (checkpoints and ``metrics.jsonl``), ``metrics.json``, ``report.md`` and
``figures/``.
"""

from __future__ import annotations

import json
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch

from dsol_lite.config import default_device
from dsol_lite.data.audio import AudioConfig, LogMel
from dsol_lite.data.datasets import MultiSourceScenes, SoloPairs
from dsol_lite.data.schema import MANIFEST_FILE
from dsol_lite.data.store import ClipStore
from dsol_lite.distributed import Ranks, wait_for_main
from dsol_lite.errors import ConfigError, DataError
from dsol_lite.folders import exclusive, is_empty_folder, write_text
from dsol_lite.evaluate import (class_maps_at_image, evaluate_single_source, extract_object_features,
                                localization_maps, mean_box_area, scalar_table, stage_two_maps, with_silent_filter)
from dsol_lite.metrics import avgn_multi_source, dsol_multi_source, silent_object_scores, upsample
from dsol_lite.models import DSOLStageTwo
from dsol_lite.report import class_map_gallery, cluster_plot, heatmap_gallery, training_curves, write_report
from dsol_lite.stage_one import STAGE_ONE_PRESETS, StageOneConfig, StageOneTrainer
from dsol_lite.stage_two import (STAGE_TWO_PRESETS, StageTwoConfig, StageTwoTrainer, check_training_scenes,
                                 cluster_to_class, load_stage_one, load_stage_two)
from dsol_lite.training import MetricsLog

MULTI_KINDS = ("cocktail", "grid2x2", "duet")


def rel_threshold(manifest_name: str, kind: str) -> float:
    """DSOL's multi-source region threshold (x max): 0.2 on real MUSIC duets, 0.5 on synthetic scenes."""
    return 0.2 if manifest_name == "MUSIC" and kind == "duet" else 0.5


@dataclass(frozen=True)
class PipelinePreset:
    world: str | None  # the synthetic world preset generated when the world folder is missing (None: real data)
    stage_one: StageOneConfig
    stage_two: StageTwoConfig


PIPELINE_PRESETS = {
    "quick": PipelinePreset("quick", STAGE_ONE_PRESETS["quick"], STAGE_TWO_PRESETS["quick"]),
    "full": PipelinePreset("full", STAGE_ONE_PRESETS["full"], STAGE_TWO_PRESETS["full"]),
    # DSOL's published settings on the full world (add --set stage_one.imagenet=false where nothing downloads)
    "paper": PipelinePreset("full", STAGE_ONE_PRESETS["paper"], STAGE_TWO_PRESETS["paper"]),
    # prepared MUSIC (notebook 07): DSOL's stage one, stage two on 2x2 scenes then real duets
    "music": PipelinePreset(None, STAGE_ONE_PRESETS["paper"], STAGE_TWO_PRESETS["music"]),
}


def has_dataset(world: Path) -> bool:
    """Whether ``world`` already holds a dataset (its manifest); ``ensure_world`` makes one otherwise."""
    return (world / MANIFEST_FILE).exists()


def ensure_world(world: Path, preset_name: str | None, progress: bool = True) -> Path:
    """Use the dataset at ``world`` if it has a manifest; otherwise generate the preset's world there
    (``preset_name=None``: real data, which only ``dsol-lite prepare-music`` makes)."""
    from dsol_lite.synth.config import preset
    from dsol_lite.synth.writer import generate_world

    if has_dataset(world):
        return world  # checked when its store opens (``data.store``), with errors naming the file
    if preset_name is None:
        raise DataError(world / MANIFEST_FILE, "no prepared dataset here: make it with `dsol-lite prepare-music` "
                                               "(solo, then duet with --grid2x2; docs/real_data.md, notebook 07)")
    if world.exists() and not is_empty_folder(world):
        raise DataError(world, f"not a dataset (no {MANIFEST_FILE}) and not empty, so no world is generated here; "
                               f"give a dataset folder, or a new or empty folder for the {preset_name} world")
    return generate_world(preset(preset_name), world, progress=progress)


def _multi_row(maps: dict, mapping: dict[int, int], num_classes: int, avgn: bool = True,
               rel: float = 0.5, real: bool = False) -> tuple[dict, torch.Tensor]:
    """One table row (DSOL multi-source, and AVGN-style unless ``avgn=False``) and the class maps.
    ``real`` (MUSIC duets): also NSA over the classes the video does not list (``nsa_not_heard``) and
    DSOL's CIoU@0.3 scored on each source's own half of the frame (``halves_ciou@0.3``, later papers)."""
    up = class_maps_at_image(maps, mapping, num_classes)
    dsol = dsol_multi_source(up, maps["class_boxes"], maps["sounding"], rel)
    row = {"ciou@0.3": dsol["ciou@0.3"], "auc": dsol["auc"], "nsa": dsol["nsa"]}
    if real:
        halves = dsol_multi_source(up, maps["class_boxes"], maps["sounding"], rel, halves=True)
        row |= {"nsa_not_heard": dsol["nsa_not_heard"], "halves_ciou@0.3": halves["ciou@0.3"]}
    if avgn:
        a = avgn_multi_source(up, maps["class_boxes"], maps["sounding"])
        row |= {"avgn_ciou@0.3": a["ciou@0.3"], "cap": a["cap"], "piap": a["piap"]}
    return row, up


def evaluate_run(world: str | Path | ClipStore, run_dir: str | Path,
                 device: torch.device | None = None) -> tuple[dict, dict]:
    """Score a finished run on the test split (``world``: the dataset folder or its open store);
    returns ``(results, figures)``."""
    run_dir = Path(run_dir)
    device = device or default_device()
    s1_cfg, s1_model, rnd = load_stage_one(run_dir / "stage_one", device)
    s2_cfg, s2_model = load_stage_two(run_dir / "stage_two" / "best.pt", s1_cfg, rnd, device)
    world = ClipStore.open(world, s1_cfg.prepared, s1_cfg.image_size, device)
    mapping, report = cluster_to_class(world, rnd)
    log_mel = LogMel(AudioConfig()).to(device)
    size = s1_cfg.evaluation_size  # solo scenes; the multi-source ones at stage two's size
    multi_size = s2_cfg.evaluation_size(s1_cfg)
    manifest = world.manifest
    classes = manifest.classes

    solo, train = SoloPairs(world, "test", image_size=size), SoloPairs(world, "train", image_size=size)
    prior_area = mean_box_area(train) or mean_box_area(SoloPairs(world, "val", image_size=size))  # MUSIC: val boxes
    maps1, gt = localization_maps(s1_model, solo, log_mel, device)
    table = evaluate_single_source(maps1, gt, prior_area)
    maps2, _ = localization_maps(s2_model.net, solo, log_mel, device)
    after = scalar_table(evaluate_single_source(maps2, gt, prior_area))["model"]
    solo_rows = {"DSOL stage one": scalar_table(table)["model"], "DSOL after stage two": after,
                 "centre prior": scalar_table(table)["centre prior"], "random": scalar_table(table)["random"]}

    # one pass per network and scene kind: the stage-one network with the dictionary (no stage-two
    # training) gives stage one's maps and heard categories too; filtered maps are derived, not recomputed
    untrained = DSOLStageTwo(s1_model, rnd.dictionary).to(device)
    multi, keep = {}, {}
    silent: dict[str, list] = {"DSOL stage one (localization map)": [],
                               "DSOL stage two (class maps weighted by what is heard)": []}
    sounding_masks, silent_masks = [], []
    k = len(classes)
    present = {e.kind for e in manifest.select("test")}
    for kind in [kind for kind in MULTI_KINDS if kind in present]:  # prepared MUSIC: duets only
        rel = rel_threshold(manifest.name, kind)
        scenes = MultiSourceScenes(world, "test", (kind,), image_size=multi_size)
        raw2 = stage_two_maps(s2_model, scenes, log_mel, device, filter_silent=False)
        raw1 = stage_two_maps(untrained, scenes, log_mel, device, filter_silent=False)
        m = with_silent_filter(raw2)
        rows = {}
        rows["DSOL stage two"], up = _multi_row(m, mapping, k, rel=rel, real=manifest.name == "MUSIC")
        rows["stage two, no silent filter"], _ = _multi_row(raw2, mapping, k, rel=rel)
        rows["stage-one dictionary, untrained"], _ = _multi_row(with_silent_filter(raw1), mapping, k, rel=rel)
        # unfiltered and untrained, these maps never hear the mixture: a class detector, which CIoU (scored
        # on the sounding classes only) cannot tell from a sound localizer; NSA can
        rows["dictionary maps, no audio"], _ = _multi_row(raw1, mapping, k, rel=rel)
        loc1 = upsample(raw1["loc_maps"], multi_size)
        same_for_all = loc1[:, None].expand(-1, k, -1, -1)  # class-agnostic: one map for every class
        d = dsol_multi_source(same_for_all, m["class_boxes"], m["sounding"], rel)
        rows["stage-one map for every class"] = {"ciou@0.3": d["ciou@0.3"], "auc": d["auc"], "nsa": d["nsa"]}
        multi[kind], keep[kind] = rows, {**m, "up": up, "scenes": scenes}
        if kind in ("cocktail", "grid2x2"):  # the scene kinds with silent objects
            q = torch.softmax(3 * m["class_maps"], dim=1)  # weighted by the frozen stage-one audio classifier
            silent["DSOL stage one (localization map)"].append(loc1)
            silent["DSOL stage two (class maps weighted by what is heard)"].append(
                upsample((raw1["audio_probs"][:, :, None, None] * q).sum(1), multi_size))
            sounding_masks.append(m["class_boxes"].any(1))
            silent_masks.append(m["silent_boxes"])
    silent_rows = {name: silent_object_scores(torch.cat(v), torch.cat(sounding_masks), torch.cat(silent_masks))
                   for name, v in silent.items() if v}

    feats = extract_object_features(s1_model, train, log_mel, device, s1_cfg.mask_threshold, s1_cfg.feature_norm)
    n = min(12, len(solo))
    figures = {
        "solo_gallery": heatmap_gallery(torch.stack([solo[i]["image"] for i in range(n)]),
                                        upsample(maps1[:n], size), gt[:n], table["model"]["_dsol"]["iou"][:n]),
        "clusters": cluster_plot(feats.objects, rnd.pseudo_labels.numpy(), feats.labels.numpy(), classes),
        "training_curves": training_curves(MetricsLog(run_dir / "stage_one" / "metrics.jsonl").read(),
                                           MetricsLog(run_dir / "stage_two" / "metrics.jsonl").read()),
    }
    if keep:  # the first multi-source kind of the test split (cocktail on the synthetic world)
        figures["class_maps"] = _class_map_figure(next(iter(keep.values())), multi_size, classes)
    results = {"solo": solo_rows, "multi": multi, "silent_objects": silent_rows,
               "image_sizes": {"train": s1_cfg.image_size, "solo": size, "multi_source": multi_size},
               "dictionary": {"round": rnd.round, "nmi": report["nmi"], "purity": report["purity"],
                              "hungarian_acc": report["hungarian_acc"], "mapping": mapping}}
    return results, figures


def _class_map_figure(maps: dict, size: int, classes: tuple[str, ...], n: int = 4):
    scenes = maps["scenes"]
    with_silent = ([i for i in range(len(scenes)) if maps["silent_boxes"][i].any()][:n]
                   or list(range(min(n, len(scenes)))))
    images = torch.stack([scenes[i]["image"] for i in with_silent])
    idx = torch.tensor(with_silent, dtype=torch.long)
    return class_map_gallery(images, maps["up"][idx], upsample(maps["loc_maps"][idx], size),
                             maps["class_boxes"][idx], maps["sounding"][idx], maps["present"][idx], classes)


def run_pipeline(preset: str | None = None, world: str | Path | None = None, runs: str | Path = "runs",
                 name: str | None = None, device: torch.device | None = None, progress: bool = True,
                 stage_one: StageOneConfig | None = None, stage_two: StageTwoConfig | None = None,
                 ranks: Ranks = Ranks()) -> Path:
    """Run (or resume) every stage and write the report; returns the run folder.

    ``stage_one`` / ``stage_two`` replace the preset's settings (tests use tiny networks). Under
    ``torchrun`` (``ranks``), both stages train on every rank; rank 0 alone makes the world if
    missing, evaluates and writes the report.
    """
    device = device or default_device()
    preset = preset or "quick"
    if preset not in PIPELINE_PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; choose one of {', '.join(PIPELINE_PRESETS)}")
    p = PIPELINE_PRESETS[preset]
    s1, s2 = (stage_one or p.stage_one).validate(), (stage_two or p.stage_two).validate()  # before anything runs
    if world is None and p.world is None:
        raise ConfigError(f"preset {preset!r} trains on real data: give the folder written by dsol-lite prepare-music")
    world = Path(world) if world is not None else Path("worlds") / str(p.world)
    run_dir = Path(runs) / (name or preset)
    # which parts this invocation makes from their start: only their times compare with the course's targets
    fresh = {"world": not has_dataset(world)}
    start = time.perf_counter()
    if ranks.is_main:
        ensure_world(world, p.world, progress)
    wait_for_main(ranks)  # the others wait for rank 0's world
    seconds = {"world": time.perf_counter() - start}
    store = ClipStore.open(world, s1.prepared, s1.image_size, device)  # read once, handed to every stage
    check_training_scenes(store.manifest, s2, ranks)  # stage two's impossible settings, said before stage one
    with exclusive(run_dir, "this run") if ranks.is_main else nullcontext():  # one process writes a run folder
        return _run_stages(preset, store, run_dir, device, progress, s1, s2, ranks, seconds, fresh)


def _run_stages(preset: str, world: ClipStore, run_dir: Path, device: torch.device, progress: bool,
                s1: StageOneConfig, s2: StageTwoConfig, ranks: Ranks, seconds: dict, fresh: dict) -> Path:
    start = time.perf_counter()
    one = StageOneTrainer(world, run_dir / "stage_one", s1, device, progress, ranks)
    fresh["stage_one"] = not one.resumed
    one.fit()
    seconds["stage_one"] = time.perf_counter() - start
    start = time.perf_counter()
    two = StageTwoTrainer(world, run_dir / "stage_two", run_dir / "stage_one", s2, device, progress, ranks)
    fresh["stage_two"] = not two.resumed
    two.fit()
    seconds["stage_two"] = time.perf_counter() - start
    if not ranks.is_main:
        return run_dir
    start = time.perf_counter()
    results, figures = evaluate_run(world, run_dir, device)
    seconds["evaluate"] = time.perf_counter() - start
    manifest = world.manifest
    results["setup"] = {"world": str(manifest.root), "classes": len(manifest.classes), "preset": preset,
                        "device": device.type, "seconds": seconds, "fresh": fresh,
                        "round": results["dictionary"]["round"],
                        "nmi": results["dictionary"]["nmi"], "purity": results["dictionary"]["purity"]}
    write_text(run_dir / "metrics.json", json.dumps(results, indent=2, sort_keys=True, default=float))
    write_report(run_dir, results, figures)
    return run_dir


__all__ = ["PIPELINE_PRESETS", "run_pipeline", "evaluate_run", "ensure_world"]
