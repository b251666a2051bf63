"""Prepare MUSIC (or any videos listed in a MUSIC-style index) into the shared on-disk layout.

Notebook: 07_real_data_music. Command: ``dsol-lite prepare-music``.

What becomes what (``PrepareConfig`` holds the numbers):

* a video with boxes in the given box file becomes one clip per annotated frame (the frame at the
  key's *time*, ``test_audio_seconds`` of sound around it, the boxes in pixels of the stored
  frame); ``val_videos`` of those videos form the validation split (checkpoints are chosen on
  them, never on test), the rest the test split;
* every other video becomes training clips of ``segment_seconds`` with ``frames_per_segment``
  frames and no boxes (DSOL trains stage one on them);
* with ``grid2x2 > 0``, DSOL's 2x2 recipe for stage two: four solo training frames tiled, the
  sounds of two of them mixed, the tiles as boxes.

Every clip is written into ``clips/<id>.part/`` and renamed when complete; a video counts as
done when its record in ``done/`` is written (atomically, last). A re-run skips what is done,
redoes what was interrupted, and writes ``dataset.json`` and ``prepare_report.json`` (vanished,
corrupt or mis-annotated videos, each with the reason) at the end.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf
from PIL import Image
from tqdm.auto import tqdm

from dsol_lite import __version__
from dsol_lite.data.annotations import MUSIC_CLASSES, BoxFile, FrameBoxes, MusicIndex
from dsol_lite.data.schema import (CLIP_FILE, ClipAnnotation, ClipEntry, DatasetManifest, FrameAnnotation,
                                   ObjectAnnotation, SourceAnnotation, clip_to_json, read_clip, read_manifest,
                                   write_json)
from dsol_lite.data.video import VideoInfo, audio_track, frames_at, probe
from dsol_lite.errors import ConfigError, DataError
from dsol_lite.folders import exclusive, is_empty_folder, read_json_or_none

VIDEO_SUFFIXES = (".mp4", ".mkv", ".webm", ".mov")
REPORT_FILE = "prepare_report.json"


@dataclass(frozen=True)
class PrepareConfig:
    segment_seconds: float = 10.0  # length of a training clip
    frames_per_segment: int = 3  # frames stored per training clip (evenly spaced)
    max_seconds: float | None = None  # use at most this much of each training video (a quick subset)
    test_audio_seconds: float = 3.0  # sound stored around an annotated frame
    frame_height: int = 256  # stored frames are resized to this height (aspect kept)
    val_videos: int = 2  # annotated videos held out from test to choose checkpoints on
    grid2x2: int = 0  # number of 2x2 scenes to compose from training clips
    sample_rate: int = 16000
    seed: int = 0

    def validate(self) -> "PrepareConfig":
        if self.segment_seconds <= 0 or self.frames_per_segment < 1 or self.test_audio_seconds <= 0:
            raise ConfigError("segment_seconds > 0, frames_per_segment >= 1 and test_audio_seconds > 0 are required")
        if self.frame_height < 16 or self.val_videos < 0 or self.grid2x2 < 0:
            raise ConfigError("frame_height >= 16, val_videos >= 0 and grid2x2 >= 0 are required")
        return self


@dataclass
class PrepareReport:
    prepared: list[str] = field(default_factory=list)  # videos prepared in this run
    reused: list[str] = field(default_factory=list)  # videos done by an earlier run
    skipped: dict[str, str] = field(default_factory=dict)  # video -> why
    skipped_frames: list[tuple[str, str]] = field(default_factory=list)  # annotation key -> why
    clips: dict[str, int] = field(default_factory=dict)  # "kind/split" -> count

    def summary(self) -> str:
        counts = ", ".join(f"{k} {v}" for k, v in sorted(self.clips.items()))
        return (f"{len(self.prepared)} videos prepared, {len(self.reused)} already done, {len(self.skipped)} "
                f"skipped, {len(self.skipped_frames)} annotated frames skipped; clips: {counts}")


def is_prepared_music(folder: Path) -> bool:
    """Whether ``folder`` holds (part of) a dataset that ``prepare_music`` wrote."""
    source = (read_json_or_none(folder / "dataset.json") or {}).get("source")
    return (folder / "done").is_dir() or (isinstance(source, dict) and source.get("dataset") == "MUSIC"
                                           and "prepare-music" in str(source.get("made_by", "")))


def ensure_writable(folder: Path) -> None:
    """Create ``folder`` and prove we can write there, or say clearly why not. A folder that holds
    files other than a MUSIC preparation of this package's is refused: nothing there is overwritten."""
    if folder.exists() and not (is_empty_folder(folder) or is_prepared_music(folder)):
        raise ConfigError(f"out={folder}: holds files that prepare-music did not write (e.g. another dataset); "
                          f"choose a new folder, or the folder of an earlier prepare-music run to continue it")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe_file = tempfile.mkstemp(dir=folder, prefix=".write-test-")
        os.close(fd)
        os.unlink(probe_file)
    except OSError as err:
        raise DataError(folder, f"cannot write to this folder ({err.strerror or err}); choose another output "
                                f"folder or fix its permissions") from None


def _disk_full(err: OSError, what: Path) -> DataError:
    return DataError(what, "the disk is full; the clip being written was discarded and is not marked done. "
                           "Free space and run the same command again to continue")


def find_video(videos_dir: Path, video_id: str) -> Path | None:
    for suffix in VIDEO_SUFFIXES:
        if (videos_dir / f"{video_id}{suffix}").is_file():
            return videos_dir / f"{video_id}{suffix}"
    return None


def download_videos(ids: list[str], videos_dir: Path, jobs: int = 4, program: str = "yt-dlp",
                    progress: bool = True) -> dict[str, str]:
    """Fetch missing videos with yt-dlp, ``jobs`` at a time; returns ``{video: reason}`` for the
    ones that could not be fetched (vanished, private, ...). Present files are not fetched again."""
    if shutil.which(program) is None:
        raise ConfigError(f"downloading needs {program}: pip install 'dsol-lite[download]' (or yt-dlp), or put "
                           f"the videos as <youtube id>.mp4 into {videos_dir} and run without --download")
    videos_dir.mkdir(parents=True, exist_ok=True)
    todo = [v for v in ids if find_video(videos_dir, v) is None]

    def fetch(video_id: str) -> tuple[str, str | None]:
        cmd = [program, "--quiet", "--no-warnings", "--no-playlist", "-f", "mp4[height<=480]/best[height<=480]/best",
               "-o", str(videos_dir / f"{video_id}.%(ext)s"), "--", f"https://www.youtube.com/watch?v={video_id}"]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0 or find_video(videos_dir, video_id) is None:
            lines = (done.stderr or done.stdout or "no output").strip().splitlines() or ["no output"]
            return video_id, f"download failed: {lines[-1][:200]}"
        return video_id, None

    failed = {}
    with ThreadPoolExecutor(max(1, jobs)) as pool:
        for video_id, reason in tqdm(pool.map(fetch, todo), total=len(todo), desc="download", disable=not progress):
            if reason:
                failed[video_id] = reason
    return failed


def _split_annotated(videos: list[str], n_val: int, seed: int) -> set[str]:
    """The annotated videos kept for validation: a fixed choice (hash of id and seed)."""
    rank = sorted(videos, key=lambda v: hashlib.sha256(f"{seed}:{v}".encode()).hexdigest())
    return set(rank[:n_val])


def _resize(frame: np.ndarray, height: int) -> np.ndarray:
    h, w = frame.shape[:2]
    width = max(1, round(w * height / h))
    return np.asarray(Image.fromarray(frame).resize((width, height), Image.BILINEAR))


class _ClipWriter:
    """Writes one clip folder atomically (``<id>.part`` then rename)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def write(self, clip: ClipAnnotation, frames: list[np.ndarray], audio: np.ndarray) -> ClipEntry:
        final = self.root / "clips" / clip.clip_id
        if (final / CLIP_FILE).is_file():
            return ClipEntry(clip.clip_id, clip.kind, clip.split)
        part = final.with_name(final.name + ".part")
        shutil.rmtree(part, ignore_errors=True)
        try:
            part.mkdir(parents=True)
            for frame, image in zip(clip.frames, frames):
                Image.fromarray(image).save(part / frame.file, quality=92)
            sf.write(part / clip.audio, audio, clip.sample_rate, subtype="PCM_16")
            write_json(part / CLIP_FILE, clip_to_json(clip))
            shutil.rmtree(final, ignore_errors=True)
            part.rename(final)
        except OSError as err:
            shutil.rmtree(part, ignore_errors=True)
            if err.errno == errno.ENOSPC:
                raise _disk_full(err, part) from None
            raise
        return ClipEntry(clip.clip_id, clip.kind, clip.split)


def _window(wave: np.ndarray, sr: int, start: float, stop: float) -> np.ndarray:
    a, b = max(0, int(round(start * sr))), min(len(wave), int(round(stop * sr)))
    return wave[a:b]


def _frame_annotation(name: str, time: float, image: np.ndarray, objects) -> FrameAnnotation:
    return FrameAnnotation(name, round(time, 6), image.shape[1], image.shape[0], None, objects)


def prepare_video(video: Path, video_id: str, classes: tuple[str, ...], kind: str, split: str,
                  boxes: list[FrameBoxes], cfg: PrepareConfig, writer: _ClipWriter) -> tuple[list[ClipEntry],
                                                                                              list[tuple[str, str]]]:
    """The clips of one video (see the module docstring); returns them and the frames skipped."""
    info: VideoInfo = probe(video)
    wave = audio_track(video, cfg.sample_rate)  # a clear DataError when there is no sound track
    sources = tuple(SourceAnnotation(c, True) for c in classes)
    sr, entries, skipped = cfg.sample_rate, [], []
    if boxes:
        usable = []
        for fb in sorted(boxes, key=lambda f: f.time):
            wrong = [b.label for b in fb.boxes if b.label not in classes]
            if wrong:
                skipped.append((fb.key, f"boxed {wrong} but the index lists {list(classes)} for this video"))
            elif fb.time >= info.duration:
                skipped.append((fb.key, f"at {fb.time:.2f} s, past the video's end ({info.duration:.2f} s)"))
            else:
                usable.append(fb)
        images = frames_at(video, [fb.time for fb in usable])
        for fb, image in zip(usable, images):
            image = _resize(image, cfg.frame_height)
            h, w = image.shape[:2]
            start = max(0.0, fb.time - cfg.test_audio_seconds / 2)
            audio = _window(wave, sr, start, fb.time + cfg.test_audio_seconds / 2)
            objects = tuple(ObjectAnnotation(b.label, b.pixels(w, h), True, None, (b.x1, b.y1, b.x2, b.y2))
                            for b in fb.boxes)
            clip = ClipAnnotation(f"{video_id}_t{round(fb.time * 1000):07d}", kind, split, "audio.wav", sr, len(audio),
                                  (_frame_annotation("frame_000.jpg", fb.time - start, image, objects),), sources,
                                  {"video": video_id, "time": fb.time, "key": fb.key, "fps": info.fps})
            entries.append(writer.write(clip, [image], audio))
        return entries, skipped
    length = min(info.duration, len(wave) / sr, cfg.max_seconds or float("inf"))
    n_segments = max(1, int(length // cfg.segment_seconds))
    seg = min(cfg.segment_seconds, length)
    for s in range(n_segments):
        start = s * seg
        offsets = [(k + 0.5) * seg / cfg.frames_per_segment for k in range(cfg.frames_per_segment)]
        images = [_resize(im, cfg.frame_height) for im in frames_at(video, [start + o for o in offsets])]
        audio = _window(wave, sr, start, start + seg)
        frames = tuple(_frame_annotation(f"frame_{k:03d}.jpg", o, im, None)
                       for k, (o, im) in enumerate(zip(offsets, images)))
        clip = ClipAnnotation(f"{video_id}_s{int(start):05d}", kind, split, "audio.wav", sr, len(audio), frames,
                              sources, {"video": video_id, "start": start, "fps": info.fps})
        entries.append(writer.write(clip, images, audio))
    return entries, skipped


def compose_grid2x2(root: Path, solo: list[ClipEntry], n: int, seed: int, sample_rate: int) -> list[ClipEntry]:
    """DSOL's 2x2 recipe on prepared solo training clips: four clips of different classes tiled
    (middle frames, each tile resized to a quarter), the sounds of two random tiles mixed."""
    manifest = read_manifest(root)
    clips = [read_clip(manifest, e.clip_id) for e in solo]
    by_class: dict[str, list[ClipAnnotation]] = {}
    for c in clips:
        by_class.setdefault(c.sources[0].label, []).append(c)
    if len(by_class) < 4:
        raise ConfigError(f"grid2x2 needs solo training clips of at least 4 classes, have {sorted(by_class)}")
    rng, writer, entries = np.random.default_rng(seed), _ClipWriter(root), []
    for i in range(n):
        labels = rng.choice(sorted(by_class), 4, replace=False)
        picks = [by_class[lab][rng.integers(len(by_class[lab]))] for lab in labels]
        sounding = set(rng.choice(4, 2, replace=False).tolist())
        tiles, waves = [], []
        for q, clip in enumerate(picks):
            frame = clip.frames[len(clip.frames) // 2]
            image = np.asarray(Image.open(manifest.clip_dir(clip.clip_id) / frame.file).convert("RGB"))
            tiles.append(np.asarray(Image.fromarray(image).resize((128, 128), Image.BILINEAR)))
            if q in sounding:
                wave, _ = sf.read(manifest.clip_dir(clip.clip_id) / clip.audio, dtype="float32")
                waves.append(_window(wave, sample_rate, frame.time - 1.5, frame.time + 1.5))
        image = np.concatenate([np.concatenate(tiles[:2], 1), np.concatenate(tiles[2:], 1)], 0)
        length = min(len(w) for w in waves)
        audio = sum(w[:length] for w in waves) / 2
        objects = tuple(ObjectAnnotation(str(lab), ((q % 2) * 128, (q // 2) * 128, (q % 2) * 128 + 128,
                                                    (q // 2) * 128 + 128), q in sounding)
                        for q, lab in enumerate(labels))
        sources = tuple(SourceAnnotation(str(labels[q]), True) for q in sorted(sounding))
        clip = ClipAnnotation(f"grid2x2-train-{i:05d}", "grid2x2", "train", "audio.wav", sample_rate, length,
                              (_frame_annotation("frame_000.jpg", length / sample_rate / 2, image, objects),),
                              sources, {"tiles": [c.clip_id for c in picks]})
        entries.append(writer.write(clip, [image], audio))
    return entries


def prepare_music(out: str | Path, index: MusicIndex, videos_dir: str | Path, boxes: BoxFile | None = None,
                  cfg: PrepareConfig = PrepareConfig(), download: bool = False, jobs: int = 2,
                  progress: bool = True) -> PrepareReport:
    """Prepare the videos of ``index`` found in ``videos_dir`` (fetching missing ones with yt-dlp
    when ``download``) into ``out`` in the shared layout; returns (and writes) the report. Run it
    again with a second index (duets) into the same ``out``: the manifest covers both."""
    cfg, out, videos_dir = cfg.validate(), Path(out), Path(videos_dir)
    ensure_writable(out)
    with exclusive(out, "a MUSIC preparation"):
        return _prepare(out, index, videos_dir, boxes, cfg, download, jobs, progress)


def _prepare(out: Path, index: MusicIndex, videos_dir: Path, boxes: BoxFile | None, cfg: PrepareConfig,
             download: bool, jobs: int, progress: bool) -> PrepareReport:
    (out / "done").mkdir(exist_ok=True)
    report = PrepareReport()
    if download:
        report.skipped.update(download_videos(sorted(index.videos), videos_dir, jobs, progress=progress))
    boxed = boxes.by_video() if boxes else {}
    if boxes:
        report.skipped_frames += boxes.skipped
    val = _split_annotated(sorted(v for v in boxed if v in index.videos), cfg.val_videos, cfg.seed)
    writer = _ClipWriter(out)
    settings = {k: v for k, v in asdict(cfg).items() if k != "grid2x2"}

    def one(video_id: str) -> None:
        record = out / "done" / f"{index.kind}-{video_id}.json"
        if record.is_file() and json.loads(record.read_text()).get("settings") == settings:
            report.reused.append(video_id)
            return
        if video_id in report.skipped:
            return
        path = find_video(videos_dir, video_id)
        if path is None:
            report.skipped[video_id] = f"no {video_id}.mp4 (or .mkv/.webm/.mov) in {videos_dir}"
            return
        split = ("val" if video_id in val else "test") if video_id in boxed else "train"
        try:
            entries, skipped = prepare_video(path, video_id, index.videos[video_id], index.kind, split,
                                             boxed.get(video_id, []), cfg, writer)
        except DataError as err:
            if "disk is full" in err.problem:
                raise
            report.skipped[video_id] = err.problem
            return
        report.skipped_frames.extend(skipped)
        write_json(record, {"settings": settings, "clips": [[e.clip_id, e.kind, e.split] for e in entries],
                            "skipped_frames": skipped})
        report.prepared.append(video_id)

    pool = ThreadPoolExecutor(max(1, jobs))
    try:
        list(tqdm(pool.map(one, sorted(index.videos)), total=len(index.videos), desc=f"prepare {index.kind}",
                  disable=not progress))
    except BaseException:
        pool.shutdown(cancel_futures=True)  # e.g. a full disk: start no further video
        raise
    pool.shutdown()
    report.prepared.sort()  # finished in thread order: sorted, so the report does not depend on timing
    report.reused.sort()
    for video_id in sorted(set(boxed) - set(index.videos)):
        report.skipped_frames.append((video_id, "boxed video is not in the index"))
    entries = write_manifest(out, cfg.sample_rate)
    if cfg.grid2x2:
        solo = [e for e in entries if e.kind == "solo" and e.split == "train"]
        grid = compose_grid2x2(out, solo, cfg.grid2x2, cfg.seed, cfg.sample_rate)
        write_json(out / "done" / "grid2x2.json", {"settings": settings, "clips": [[e.clip_id, e.kind, e.split]
                                                                                  for e in grid]})
        entries = write_manifest(out, cfg.sample_rate)
    for e in entries:
        report.clips[f"{e.kind}/{e.split}"] = report.clips.get(f"{e.kind}/{e.split}", 0) + 1
    write_json(out / REPORT_FILE, asdict(report) | {"summary": report.summary()})
    return report


def write_manifest(out: Path, sample_rate: int = 16000) -> list[ClipEntry]:
    """``dataset.json`` from the records in ``done/`` (only finished videos count)."""
    entries = []
    for record in sorted((out / "done").glob("*.json")):
        entries += [ClipEntry(*row) for row in json.loads(record.read_text())["clips"]]
    digest = hashlib.sha256(json.dumps([[e.clip_id, e.kind, e.split] for e in entries]).encode()).hexdigest()[:16]
    manifest = DatasetManifest(out, "MUSIC", MUSIC_CLASSES, sample_rate, tuple(entries),
                               {"dataset": "MUSIC", "made_by": f"dsol_lite {__version__} prepare-music",
                                "fingerprint": digest})
    write_json(out / "dataset.json", manifest.to_json())
    return entries
