"""The ``dsol-lite`` command.

Notebook: 00_setup_and_data (``dsol-lite synth``, ``dsol-lite info``).

    dsol-lite run                                         # the whole pipeline, report in runs/quick/
    dsol-lite run --method fnac                           # a peer method, report in runs/quick-fnac/
    dsol-lite compare --preset quick --seeds 0 1 2        # every method, 3 seeds, one table
    torchrun --nproc_per_node 4 -m dsol_lite.cli run --preset music --world data/music   # several GPUs
    dsol-lite synth --preset quick --out worlds/quick     # generate the synthetic world
    dsol-lite info worlds/quick                           # what is in a dataset folder
    dsol-lite prepare-music data/music --videos data/videos --index solo --boxes music_solo_test_boxes.json
    dsol-lite cache data/music data/music-cache-224 --image-size 224   # the prepared cache (notebook 07)
"""

from __future__ import annotations

import argparse
import difflib
import json
import sys
import time
from pathlib import Path

from dsol_lite import __version__
from dsol_lite.errors import ConfigError, DataError
from dsol_lite.synth.variants import ROBUSTNESS_VARIANTS


def _synth(args: argparse.Namespace) -> int:
    from dsol_lite.synth.config import preset
    from dsol_lite.synth.writer import generate_world, is_complete

    knobs = {"seed": args.seed, "num_classes": args.num_classes, "image_size": args.image_size,
             "solo_max_distractors": args.distractors, "solo_distractor_fraction": args.distractor_fraction,
             "clutter": args.clutter, "noise_snr_db": args.noise_snr, "offscreen_prob": args.offscreen_prob}
    knobs = {k: v for k, v in knobs.items() if v is not None}
    if args.coverage is not None:
        knobs["coverage"] = tuple(args.coverage)
    if args.silent is not None:
        knobs["cocktail_silent"] = (1, args.silent)
    cfg = preset(args.preset, **knobs)
    if args.test_variant:
        from dsol_lite.synth.variants import robustness_config

        cfg = robustness_config(cfg, args.test_variant)
    out = Path(args.out)
    if is_complete(out, cfg) and not args.overwrite:
        print(f"{out} already holds this world ({cfg.total_scenes()} scenes); nothing to do")
    else:
        start = time.perf_counter()
        generate_world(cfg, out, workers=args.workers, progress=not args.no_progress, overwrite=args.overwrite)
        seconds = time.perf_counter() - start
        print(f"wrote {cfg.total_scenes()} scenes to {out} in {seconds:.1f} s "
              f"({cfg.total_scenes() / seconds:.0f} scenes/s)")
    return _info(argparse.Namespace(root=out))


def _info(args: argparse.Namespace) -> int:
    from dsol_lite.data.schema import SPLITS, read_manifest
    from dsol_lite.synth.writer import manifest_summary

    manifest = read_manifest(args.root)
    print(f"dataset {manifest.name!r} at {manifest.root}: {len(manifest.clips)} clips, "
          f"{len(manifest.classes)} classes ({', '.join(manifest.classes)}), {manifest.sample_rate} Hz")
    print(f"  {'kind':<10}" + "".join(f"{s:>7}" for s in SPLITS))
    for kind, row in manifest_summary(args.root).items():
        print(f"  {kind:<10}" + "".join(f"{row[s]:>7}" for s in SPLITS))
    return 0


def _world_argument(world: str | None, preset: str) -> str | None:
    """``--world``, checked before anything runs: a folder that is not there is generated only at the
    preset's own place (``worlds/<preset>``, the default); elsewhere it is most likely a typo."""
    from dsol_lite.pipeline import PIPELINE_PRESETS, has_dataset

    if world is None or has_dataset(Path(world)) or Path(world).is_dir():
        return world
    default = PIPELINE_PRESETS[preset].world
    if default is not None and Path(world).resolve() == (Path("worlds") / default).resolve():
        return world
    near = difflib.get_close_matches(Path(world).name, [p.name for p in Path(world).parent.glob("*") if p.is_dir()])
    hint = f" (did you mean {Path(world).parent / near[0]}?)" if near else ""
    make = (f"make a world there first: dsol-lite synth --preset {default} --out {world}" if default else
            "prepare MUSIC there first: dsol-lite prepare-music (docs/real_data.md, notebook 07)")
    raise ConfigError(f"--world {world}: no such folder{hint}. Give a dataset folder"
                      f"{f', leave --world out to use worlds/{default}' if default else ''}, or {make}")


def _stage_settings(preset: str, pairs: list[str], prepared: str | None) -> dict:
    """The preset's stage-one and stage-two settings with ``--set`` and ``--prepared``, validated."""
    import dataclasses

    from dsol_lite.config import with_overrides
    from dsol_lite.pipeline import PIPELINE_PRESETS

    stages = {"stage_one": PIPELINE_PRESETS[preset].stage_one, "stage_two": PIPELINE_PRESETS[preset].stage_two}
    for pair in pairs:  # --set stage_one.epochs=5 --set stage_two.batch_size=16
        stage, dot, setting = pair.partition(".")
        if not dot or stage not in stages:
            raise ConfigError(f"--set {pair}: expected stage_one.KEY=VALUE or stage_two.KEY=VALUE")
        stages[stage] = with_overrides(stages[stage], [setting], prefix=f"{stage}.")
    if prepared:  # the prepared cache of --world (not part of the checkpoints' settings)
        stages = {k: dataclasses.replace(cfg, prepared=prepared) for k, cfg in stages.items()}
    for stage, cfg in stages.items():
        try:
            cfg.validate()
        except ConfigError as err:
            raise ConfigError(f"{stage}.{err}") from None
    return stages


def _peer_settings(method: str, preset: str, pairs: list[str], prepared: str | None):
    """A peer method's one training stage: the preset's ``PeerConfig`` with ``--set KEY=VALUE``."""
    import dataclasses

    from dsol_lite.config import with_overrides
    from dsol_lite.methods import PEER_PRESETS

    if preset not in ("quick", "full"):
        raise ConfigError(f"--preset {preset}: peer methods have the quick and full presets")
    for pair in pairs:
        if pair.startswith(("stage_one.", "stage_two.")):
            raise ConfigError(f"--set {pair}: --method {method} trains one stage, whose settings have no stage "
                              f"name: write --set {pair.partition('.')[2]}")
    cfg = with_overrides(dataclasses.replace(PEER_PRESETS[preset], method=method), pairs)
    if prepared:
        cfg = dataclasses.replace(cfg, prepared=prepared)
    return cfg.validate()


def _run(args: argparse.Namespace) -> int:
    from dsol_lite.config import parse_device
    from dsol_lite.distributed import distributed_run, launched_ranks
    from dsol_lite.pipeline import run_pipeline

    if launched_ranks().enabled and args.method != "dsol":
        raise ConfigError(f"--method {args.method} trains in one process; only DSOL (the default) runs under torchrun")
    device = parse_device(args.device)
    name = args.preset or "quick"  # argparse allows only known presets; a GPU makes quick mode faster, not bigger
    start = time.perf_counter()
    if args.method != "dsol":
        from dsol_lite.comparison import run_method

        cfg = _peer_settings(args.method, name, args.set, args.prepared)
        world = _world_argument(args.world, name)
        run_dir = run_method(args.method, name, world, args.runs, args.name, device, progress=not args.no_progress,
                             cfg=cfg)
        row = json.loads((run_dir / "metrics.json").read_text())[0]
        print(f"done in {time.perf_counter() - start:.0f} s on {device.type}: {args.method} solo IoU@0.5 "
              f"{row['dsol_iou@0.5']:.3f} (centre prior {row['centre_prior_iou@0.5']:.3f})")
        print(f"report: {run_dir / 'report.md'}")
        return 0
    stages = _stage_settings(name, args.set, args.prepared)
    world = _world_argument(args.world, name)
    with distributed_run(device) as (ranks, device):
        run_dir = run_pipeline(name, world, args.runs, args.name, device, progress=not args.no_progress,
                               ranks=ranks, **stages)
    if not ranks.is_main:
        return 0
    results = json.loads((run_dir / "metrics.json").read_text())
    solo = results["solo"]["DSOL stage one"]
    multi = ""
    if results["multi"]:  # the first multi-source kind: cocktail on the synthetic world
        kind, rows = next(iter(results["multi"].items()))
        s2 = rows["DSOL stage two"]
        multi = f"; {kind} CIoU@0.3 {s2['ciou@0.3']:.3f}, NSA {s2['nsa']:.3f}"
    print(f"done in {time.perf_counter() - start:.0f} s on {device.type}: solo IoU@0.5 {solo['dsol_iou@0.5']:.3f} "
          f"(centre prior {results['solo']['centre prior']['dsol_iou@0.5']:.3f}){multi}")
    print(f"report: {run_dir / 'report.md'}")
    return 0


def _stage_one(args: argparse.Namespace) -> int:
    from dsol_lite.config import parse_device, with_overrides
    from dsol_lite.distributed import distributed_run
    from dsol_lite.stage_one import STAGE_ONE_PRESETS, StageOneTrainer

    device = parse_device(args.device)
    cfg = with_overrides(STAGE_ONE_PRESETS[args.preset or "quick"], args.set).validate()
    start = time.perf_counter()
    with distributed_run(device) as (ranks, device):
        result = StageOneTrainer(args.world, args.run_dir, cfg, device, not args.no_progress, ranks).fit()
    if ranks.is_main:
        print(f"stage one done in {time.perf_counter() - start:.0f} s on {ranks.world_size} x {device.type}: "
              f"best val IoU@0.5 {result['best_val_iou@0.5']:.3f} after {result['epochs']} epochs; {args.run_dir}")
    return 0


def _compare(args: argparse.Namespace) -> int:
    from dsol_lite.comparison import compare_methods, comparison_markdown, offscreen_world, write_rows
    from dsol_lite.config import parse_device
    from dsol_lite.methods import PEER_PRESETS
    from dsol_lite.pipeline import ensure_world
    from dsol_lite.robustness import robustness_sets
    from dsol_lite.tuning import check_sweep_epochs, tuned_comparison

    if args.preset not in PEER_PRESETS:
        raise ConfigError(f"unknown preset {args.preset!r}; choose one of {', '.join(PEER_PRESETS)}")
    if args.sweep_epochs is not None:  # refused before the world or any set is made
        if args.no_tune:
            raise ConfigError(f"--sweep-epochs {args.sweep_epochs}: the sweep's epochs per configuration, and "
                              "--no-tune trains no sweep; leave one of them out")
        check_sweep_epochs(args.sweep_epochs, PEER_PRESETS[args.preset], "--sweep-epochs")
    device = parse_device(args.device)
    world_preset = "full" if args.preset == "full" else "quick"
    world = ensure_world(Path(args.world or f"worlds/{world_preset}"), world_preset, not args.no_progress)
    out = Path(args.runs) / f"compare-{args.preset}"
    offscreen = offscreen_world(out / "offscreen-world")
    start = time.perf_counter()
    if args.no_tune:
        result = {"rows": compare_methods(world, out, args.methods, args.seeds, PEER_PRESETS[args.preset], device,
                                          offscreen, progress=not args.no_progress)}
    else:
        sets = robustness_sets(world, out / "robustness-sets", progress=not args.no_progress)
        result = tuned_comparison(world, out, args.methods, args.seeds, PEER_PRESETS[args.preset], device, offscreen,
                                  sets, progress=not args.no_progress, epochs=args.sweep_epochs)
    seconds = time.perf_counter() - start
    result = {"command": "dsol-lite " + " ".join(_argv_for_record(args)), "preset": args.preset,
              "seconds": round(seconds)} | result
    write_rows(result, out / "comparison.json")
    print(comparison_markdown(result))
    print(f"{len(result['rows'])} runs in {seconds:.0f} s; everything: {out / 'comparison.json'}")
    return 0


def _argv_for_record(args: argparse.Namespace) -> list[str]:
    """The compare command's settings as options (the record of what produced a comparison file)."""
    words = ["compare", "--preset", args.preset, "--seeds", *map(str, args.seeds), "--methods", *args.methods]
    words += ["--sweep-epochs", str(args.sweep_epochs)] if args.sweep_epochs is not None else []
    return words + (["--no-tune"] if args.no_tune else [])


def _prepare_music(args: argparse.Namespace) -> int:
    from dsol_lite.data.annotations import MUSIC_INDEX_URLS, fetch, read_boxes, read_music_index
    from dsol_lite.data.music import PrepareConfig, prepare_music

    out = Path(args.out)
    index_path = args.index
    if args.index in MUSIC_INDEX_URLS:  # the official file, downloaded once and checked by SHA-256
        url, sha = MUSIC_INDEX_URLS[args.index]
        index_path = fetch(url, out.parent / Path(url).name, sha)
    cfg = PrepareConfig(segment_seconds=args.segment_seconds, max_seconds=args.max_seconds,
                        frame_height=args.frame_height, val_videos=args.val_videos, grid2x2=args.grid2x2)
    report = prepare_music(out, read_music_index(index_path), args.videos, read_boxes(args.boxes) if args.boxes
                           else None, cfg, download=args.download, jobs=args.jobs, progress=not args.no_progress)
    print(report.summary())
    for video, why in sorted(report.skipped.items()):
        print(f"  skipped {video}: {why}")
    print(f"full report: {out / 'prepare_report.json'}")
    return 0


def _cache(args: argparse.Namespace) -> int:
    from dsol_lite.data.prepared import build_cache

    start = time.perf_counter()
    out = build_cache(args.root, args.out, args.image_size, progress=not args.no_progress)
    print(f"cache of {args.root} at {args.image_size} px written to {out} in {time.perf_counter() - start:.1f} s")
    return 0


def _method_name(name: str) -> str:
    from dsol_lite.methods import METHODS

    if name not in METHODS:
        raise argparse.ArgumentTypeError(f"unknown method {name!r}; choose one of: {', '.join(METHODS)}")
    return name


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dsol-lite", description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", action="version", version=f"dsol_lite {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", help="world -> stage one -> dictionary -> stage two -> evaluation -> report")
    r.add_argument("--method", default="dsol", type=_method_name,
                   help="dsol (default: the whole DSOL pipeline) or a peer: ezvsl, fnac, alignment, avgn")
    r.add_argument("--preset", choices=("quick", "full", "paper", "music"),
                   help="quick (default, on every device), full (the same recipe at DSOL's scale, for a GPU), "
                        "paper (DSOL's published settings), music (prepared MUSIC given by --world)")
    r.add_argument("--world", help="dataset folder (default: worlds/<preset>, generated there when missing)")
    r.add_argument("--runs", default="runs", help="where run folders go (default: runs)")
    r.add_argument("--name", help="run folder name (default: the preset); an existing run resumes")
    r.add_argument("--prepared", help="the prepared cache of --world (dsol-lite cache) for both stages")
    r.add_argument("--set", action="append", default=[], metavar="STAGE.KEY=VALUE",
                   help="change one setting of the preset, e.g. --set stage_one.epochs=5 --set stage_two.kinds=duet,"
                        "cocktail; with --method, KEY=VALUE of the method's settings, e.g. --set epochs=4")
    r.add_argument("--device", help="cpu, cuda, mps (default: the best available)")
    r.add_argument("--no-progress", action="store_true")
    r.set_defaults(func=_run)

    c = sub.add_parser("compare", help="train and evaluate several methods over several seeds (notebook 06)")
    c.add_argument("--preset", default="quick", help="quick (default) | full | compare-quick (notebook 06's live size)")
    c.add_argument("--methods", nargs="+", type=_method_name, default=["dsol", "ezvsl", "fnac", "alignment", "avgn"])
    c.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    c.add_argument("--world", help="dataset folder (default: worlds/quick, or worlds/full for --preset full)")
    c.add_argument("--runs", default="runs", help="the runs go to RUNS/compare-<preset>/ (default: runs)")
    c.add_argument("--no-tune", action="store_true",
                   help="train the preset as it is (default: every method gets the same validation sweep, "
                        "dsol_lite.tuning, and is scored on the robustness test sets as well)")
    c.add_argument("--sweep-epochs", type=int, help="epochs every configuration of the sweep trains before the "
                   "choice (default: 3 of the quick preset's 8, dsol_lite.tuning.sweep_epochs)")
    c.add_argument("--device", help="cpu, cuda, mps (default: the best available)")
    c.add_argument("--no-progress", action="store_true")
    c.set_defaults(func=_compare)

    o = sub.add_parser("stage-one", help="train DSOL's stage one only; runs on several GPUs under torchrun")
    o.add_argument("world", help="dataset folder (a synthetic world or prepared MUSIC)")
    o.add_argument("run_dir", help="checkpoints and metrics go here; an existing run resumes")
    o.add_argument("--preset", choices=("quick", "full", "paper"), help="quick (default), full or paper")
    o.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="change one StageOneConfig setting, e.g. --set epochs=5 --set prepared=data/cache-224")
    o.add_argument("--device", help="cpu, cuda, mps (default: the best available; torchrun: one GPU per process)")
    o.add_argument("--no-progress", action="store_true")
    o.set_defaults(func=_stage_one)

    s = sub.add_parser("synth", help="generate the synthetic audio-visual world")
    s.add_argument("--preset", default="quick", help="sample | tiny | quick | full (default: quick)")
    s.add_argument("--out", required=True, help="folder to write (created atomically)")
    s.add_argument("--seed", type=int)
    s.add_argument("--num-classes", type=int, help="number of instrument classes (2-10)")
    s.add_argument("--image-size", type=int, help="frame size in pixels")
    s.add_argument("--distractors", type=int, help="most silent distractors in a solo scene")
    s.add_argument("--distractor-fraction", type=float, help="fraction of solo scenes with distractors")
    s.add_argument("--silent", type=int, help="most silent objects in a cocktail scene")
    s.add_argument("--coverage", type=float, nargs=2, metavar=("MIN", "MAX"),
                   help="fraction of the image one object covers (within 0.02-0.15)")
    s.add_argument("--clutter", type=int, help="background shapes per image")
    s.add_argument("--noise-snr", type=float, help="background noise at this SNR in dB")
    s.add_argument("--offscreen-prob", type=float, help="chance of an extra off-screen sound")
    s.add_argument("--test-variant", choices=tuple(ROBUSTNESS_VARIANTS),
                   help="write only the test split, its audio re-rendered as this robustness set (the same "
                        "pictures and boxes)")
    s.add_argument("--workers", type=int, help="processes (default: all cores)")
    s.add_argument("--overwrite", action="store_true", help="replace a different world in --out")
    s.add_argument("--no-progress", action="store_true")
    s.set_defaults(func=_synth)

    m = sub.add_parser("prepare-music", help="MUSIC videos -> the shared on-disk layout (notebook 07)")
    m.add_argument("out", help="dataset folder to write (re-running resumes)")
    m.add_argument("--videos", required=True, help="folder of <youtube id>.mp4 files (downloads go here)")
    m.add_argument("--index", default="solo", help="solo | duet (official file, checked by SHA-256) or a path")
    m.add_argument("--boxes", help="box file of the test videos (DSOL or AVGN format)")
    m.add_argument("--download", action="store_true", help="fetch missing videos with yt-dlp (needs network)")
    m.add_argument("--jobs", type=int, default=4, help="videos downloaded / decoded at once")
    m.add_argument("--segment-seconds", type=float, default=10.0, help="length of a training clip")
    m.add_argument("--max-seconds", type=float, help="use at most this much of each training video")
    m.add_argument("--frame-height", type=int, default=256, help="stored frame height in pixels")
    m.add_argument("--val-videos", type=int, default=2, help="annotated videos kept for validation")
    m.add_argument("--grid2x2", type=int, default=0, help="2x2 scenes to compose for stage two")
    m.add_argument("--no-progress", action="store_true")
    m.set_defaults(func=_prepare_music)

    k = sub.add_parser("cache", help="build the prepared cache of a dataset (uint8 frames, int16 audio)")
    k.add_argument("root", help="dataset folder")
    k.add_argument("out", help="cache folder to write")
    k.add_argument("--image-size", type=int, required=True, help="training resolution")
    k.add_argument("--no-progress", action="store_true")
    k.set_defaults(func=_cache)

    i = sub.add_parser("info", help="summarise a dataset folder")
    i.add_argument("root")
    i.set_defaults(func=_info)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ConfigError, DataError) as err:
        print(f"dsol-lite: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # e.g. a read-only folder or a full disk: say which file, no traceback
        where = f"{err.filename}: " if err.filename else ""
        print(f"dsol-lite: error: {where}{err.strerror or err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
