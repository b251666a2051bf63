"""Real-data path without network: box/index readers on hand-made files whose pixels are known,
PyAV extraction by timestamp from locally made 25/30-fps videos, MUSIC preparation (skips,
report, resume, full disk, no permission, fake yt-dlp), the prepared cache, a short training."""

from __future__ import annotations

import errno
import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dsol_lite.cli import main
from dsol_lite.data import music
from dsol_lite.data.annotations import (Box, MusicIndex, fetch, read_avgn_boxes, read_boxes, read_dsol_boxes,
                                        read_music_index, read_vggss_boxes, sha256_of)
from dsol_lite.data.datasets import SoloPairs
from dsol_lite.data.music import PrepareConfig, prepare_music
from dsol_lite.data.prepared import build_cache, open_cache
from dsol_lite.data.schema import read_clip, read_manifest
from dsol_lite.data.video import audio_track, frames_at, make_video, probe, read_frame_code
from dsol_lite.errors import AnnotationError, ConfigError, DataError


def write(path: Path, payload) -> Path:
    path.write_text(json.dumps(payload))
    return path


# -- readers -------------------------------------------------------------------------------------
def test_dsol_reader_pixels_known(tmp_path):
    # a 200x100 frame; a box from pixel column 20 (width 50) and row 10 (height 40): x1 20, x2 70, y1 10, y2 50
    key = "abc-_x1_0_1000/frame_002/00067.jpg"  # frame 67 at 30 fps = 2.2333 s
    f = write(tmp_path / "b.json", {key: {"bbox": [{"box": [20, 10, 50, 40], "normbox": [0.1, 0.1, 0.25, 0.4],
                                                    "category_id": 11}], "wdith": 200, "height": 100}})
    (frame,) = read_dsol_boxes(f).frames
    assert frame.video == "abc-_x1" and frame.time == pytest.approx(67 / 30) and frame.size == (200, 100)
    assert frame.boxes[0].label == "violin"
    assert frame.boxes[0].pixels(200, 100) == (20, 10, 70, 50)
    assert frame.boxes[0].pixels(400, 200) == (40, 20, 140, 100)  # the stored frame may be another size
    assert read_boxes(f).frames == [frame]


def test_dsol_reader_refuses_wrong_conventions(tmp_path):
    good = {"bbox": [{"box": [20, 10, 50, 40], "normbox": [0.1, 0.1, 0.25, 0.4], "category_id": 11}],
            "wdith": 200, "height": 100}
    xyxy = {**good, "bbox": [{**good["bbox"][0], "normbox": [0.1, 0.1, 0.35, 0.5]}]}  # normbox read as x1y1x2y2
    with pytest.raises(AnnotationError, match="disagree"):
        read_dsol_boxes(write(tmp_path / "a.json", {"v_0_1000/frame_002/00067.jpg": xyxy}))
    with pytest.raises(AnnotationError, match="not in second"):
        read_dsol_boxes(write(tmp_path / "b.json", {"v_0_1000/frame_003/00067.jpg": good}))
    with pytest.raises(AnnotationError, match="category_id 2"):
        bad = {**good, "bbox": [{**good["bbox"][0], "category_id": 2}]}
        read_dsol_boxes(write(tmp_path / "c.json", {"v_0_1000/frame_002/00067.jpg": bad}))
    with pytest.raises(AnnotationError, match="AVGN or VGG-SS"):
        read_dsol_boxes(write(tmp_path / "d.json", [{"file": "v_000_00000"}]))
    empty = read_dsol_boxes(write(tmp_path / "e.json", {"v_0_1000/frame_002/00067.jpg": {**good, "bbox": []}}))
    assert empty.frames == [] and empty.skipped[0][1] == "annotated frame without a box"


def test_avgn_reader_is_xywh_not_xyxy(tmp_path):
    solo = write(tmp_path / "s.json", [{"file": "vid_001_00037", "class": "flute", "bbox": [0.5, 0.25, 0.25, 0.5]}])
    (frame,) = read_avgn_boxes(solo).frames
    assert frame.video == "vid" and frame.time == pytest.approx(37 / 30)
    assert frame.boxes[0].pixels(100, 40) == (50, 10, 75, 30)  # x 50..75 (w 25), y 10..30 (h 20)
    duet = write(tmp_path / "d.json", [{"file": "v2_000_00014", "class_src1": "cello", "bbox_src1": [0, 0, .5, 1],
                                        "class_src2": "violin", "bbox_src2": [.5, 0, .5, 1]}])
    (frame,) = read_boxes(duet).frames
    assert [(b.label, b.pixels(10, 10)) for b in frame.boxes] == [("cello", (0, 0, 5, 10)), ("violin", (5, 0, 10, 10))]
    with pytest.raises(AnnotationError, match="outside"):  # xyxy data read as xywh runs off the frame
        read_avgn_boxes(write(tmp_path / "x.json", [{"file": "v_000_00000", "class": "flute",
                                                     "bbox": [0.5, 0.5, 0.9, 0.9]}]))


def test_vggss_reader_several_boxes_and_degenerate(tmp_path):
    f = write(tmp_path / "v.json", [{"file": "yt_000030", "class": "dog", "bbox": [[0.1, 0.2, 0.3, 0.6],
                                                                                 [0.5, 0.5, 0.5, 0.9]]},
                                    {"file": "zz_000000", "class": "cat", "bbox": [[0.2, 1.0, 0.7, 1.0]]}])
    got = read_boxes(f)
    assert len(got.frames) == 1 and got.frames[0].time == 5.0 and got.frames[0].video == "yt_000030"
    assert got.frames[0].boxes[0].pixels(10, 10) == (1, 2, 3, 6)
    assert len(got.skipped) == 3  # two degenerate boxes, one frame left without a box
    assert read_vggss_boxes(f).frames == got.frames


def test_box_pixels_on_the_border():
    assert Box("x", 0.0, 0.0, 1.0, 1.0).pixels(7, 5) == (0, 0, 7, 5)
    assert Box("x", 0.99, 0.99, 1.0, 1.0).pixels(10, 10) == (9, 9, 10, 10)  # never empty
    assert Box("x", 0.3, 0.3, 0.7, 0.7).pixels(10, 10) == (3, 3, 7, 7)  # 0.3 * 10 is not 2.9999


def test_music_index_reader(tmp_path):
    idx = read_music_index(write(tmp_path / "i.json", {"version": 1.0, "videos": {"flute violin": ["abcdefghijk"]}}))
    assert idx.kind == "duet" and idx.videos == {"abcdefghijk": ("flute", "violin")}
    for bad, match in [({"flute": ["abcdefghijk"]}, "MUSIC index"), ({"videos": {"banjo": ["abcdefghijk"]}}, "banjo"),
                       ({"videos": {"flute": "abcdefghijk"}}, "list of YouTube ids"),
                       ({"videos": {"flute": ["abcdefghijk"], "flute cello": ["zzzzzzzzzzz"]}}, "mixes")]:
        with pytest.raises(AnnotationError, match=match):
            read_music_index(write(tmp_path / "bad.json", bad))


def test_fetch_checks_sha256(tmp_path):
    src = write(tmp_path / "src.json", {"videos": {}})
    good = sha256_of(src)
    assert fetch(src.as_uri(), tmp_path / "got" / "a.json", good).read_bytes() == src.read_bytes()
    with pytest.raises(DataError, match="download refused"):
        fetch(src.as_uri(), tmp_path / "got" / "b.json", "0" * 64)
    assert not (tmp_path / "got" / "b.json").exists() and not (tmp_path / "got" / "b.json.part").exists()


# -- videos --------------------------------------------------------------------------------------
@pytest.mark.parametrize("fps", [25, 30])
def test_frames_by_timestamp_and_audio(tmp_path, fps):
    path = make_video(tmp_path / "v.mp4", 2.0, fps, tone_hz=500.0)
    info = probe(path)
    assert info.fps == fps and info.duration == pytest.approx(2.0, abs=0.05) and info.has_audio
    times = [n / 30 for n in (0, 7, 14, 21, 30, 37, 44, 51)]  # the MUSIC key frames of two seconds
    codes = [read_frame_code(f) for f in frames_at(path, times)]
    assert codes == [int(np.floor(t * fps + 1e-9)) for t in times]
    wave = audio_track(path)
    assert abs(len(wave) - 32000) < 1100  # 2 s at 16 kHz (AAC pads the last frame)
    spectrum = np.abs(np.fft.rfft(wave[4000:20000]))
    assert np.argmax(spectrum) == 500  # 1-Hz bins over 1 s: the tone is at 500 Hz


def test_corrupt_video_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00" * 1000)
    with pytest.raises(DataError, match="bad.mp4"):
        probe(bad)


# -- preparation -----------------------------------------------------------------------------------
KEYS = (30, 37, 44, 51, 60)  # frame numbers at 30 fps


@pytest.fixture(scope="module")
def music_src(tmp_path_factory) -> tuple[Path, Path, Path]:
    """Five 3-s videos at 25 or 30 fps (two annotated), one corrupt file, one id without a file."""
    root = tmp_path_factory.mktemp("music_src")
    fps = {"fluteAAA25x": 25, "celloBBB30x": 30, "violinCC30x": 30, "trumpDD25xx": 25, "fluteEEE30x": 30}
    for v, f in fps.items():
        make_video(root / "videos" / f"{v}.mp4", 3.0, f, size=(160, 90))
    (root / "videos" / "erhuCorrupt.mp4").write_bytes(b"not a video" * 50)
    index = write(root / "solo.json", {"version": 1.0, "videos": {
        "flute": ["fluteAAA25x", "fluteEEE30x"], "cello": ["celloBBB30x"], "violin": ["violinCC30x"],
        "trumpet": ["trumpDD25xx"], "erhu": ["erhuCorrupt"], "tuba": ["tubaVanished"]}})
    boxes = {}
    for v, cat in (("fluteAAA25x", 12), ("celloBBB30x", 1)):
        for n in KEYS:
            boxes[f"{v}_0_1000/frame_{n // 30:03d}/{n:05d}.jpg"] = {
                "bbox": [{"box": [40, 18, 80, 45], "normbox": [0.25, 0.2, 0.5, 0.5], "category_id": cat}],
                "wdith": 160, "height": 90}
    return root, index, write(root / "boxes.json", boxes)


CFG = PrepareConfig(segment_seconds=1.5, frames_per_segment=2, frame_height=72, val_videos=1)


def test_prepare_timestamps_skips_report_and_resume(music_src, tmp_path):
    root, index, boxes = music_src
    out = tmp_path / "music"
    report = prepare_music(out, read_music_index(index), root / "videos", read_boxes(boxes), CFG, progress=False)
    assert set(report.skipped) == {"erhuCorrupt", "tubaVanished"}
    assert "cannot open video" in report.skipped["erhuCorrupt"]
    assert "no tubaVanished.mp4" in report.skipped["tubaVanished"]
    saved = json.loads((out / "prepare_report.json").read_text())
    assert set(saved["skipped"]) == {"erhuCorrupt", "tubaVanished"}
    manifest = read_manifest(out)
    annotated = [read_clip(manifest, e.clip_id) for e in manifest.clips if e.split in ("val", "test")]
    assert len(annotated) == 2 * len(KEYS) and {c.split for c in annotated} == {"val", "test"}
    for clip in annotated:  # the stored frame is the one on screen at the key's time, at 25 and at 30 fps
        n = int(clip.extra["key"][-9:-4])
        image = np.asarray(Image.open(manifest.clip_dir(clip.clip_id) / clip.frames[0].file))
        assert read_frame_code(image) == int(np.floor(n / 30 * clip.extra["fps"] + 1e-9)), clip.extra
        assert clip.frames[0].objects[0].box == (32, 14, 96, 51)  # [0.25, 0.2, 0.75, 0.7] of 128x72: y 14.4..50.4
    train = manifest.select("train")
    assert len(train) == 3 * 2 and all(read_clip(manifest, e.clip_id).frames[0].objects is None for e in train)
    again = prepare_music(out, read_music_index(index), root / "videos", read_boxes(boxes), CFG, progress=False)
    assert again.prepared == [] and len(again.reused) == 5
    assert read_manifest(out).clips == manifest.clips


def test_prepare_disk_full_leaves_nothing_marked_done(music_src, tmp_path, monkeypatch):
    root, index, _ = music_src
    out = tmp_path / "music"
    real_write = music.sf.write

    def full_disk(path, *args, **kwargs):
        if "violinCC30x" in str(path):  # the last video in order: the others are done first
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(path, *args, **kwargs)

    monkeypatch.setattr(music.sf, "write", full_disk)
    cfg = PrepareConfig(segment_seconds=1.5, frames_per_segment=2, frame_height=72)
    with pytest.raises(DataError, match="disk is full"):
        prepare_music(out, read_music_index(index), root / "videos", None, cfg, jobs=1, progress=False)
    assert not (out / "done" / "solo-violinCC30x.json").exists()
    assert not list((out / "clips").glob("violinCC30x*"))  # no half-written clip, not even a .part
    monkeypatch.setattr(music.sf, "write", real_write)  # space freed: the same command finishes the job
    report = prepare_music(out, read_music_index(index), root / "videos", None, cfg, jobs=1, progress=False)
    assert report.prepared == ["violinCC30x"] and len(report.reused) == 4  # what was done before is reused


def test_prepare_refuses_unwritable_folder(tmp_path, monkeypatch):
    target = tmp_path / "locked"
    target.mkdir()
    if os.geteuid() == 0:  # root writes anywhere: simulate the refusal the file system would give
        def refuse(*args, **kwargs):
            raise PermissionError(errno.EACCES, "Permission denied")
        monkeypatch.setattr(music.tempfile, "mkstemp", refuse)
    else:
        target.chmod(stat.S_IRUSR | stat.S_IXUSR)
    with pytest.raises(DataError, match="cannot write to this folder"):
        music.ensure_writable(target)


def test_download_with_yt_dlp_reports_vanished(music_src, tmp_path, monkeypatch):
    root, _, _ = music_src
    fake = tmp_path / "bin" / "yt-dlp"  # a stand-in that "downloads" from a local folder
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\nfor a; do last=$a; done\nid=${last##*=}\n"
                    f"src={root / 'videos'}/$id.mp4\n"
                    "while [ $# -gt 0 ]; do [ \"$1\" = -o ] && out=$2; shift; done\n"
                    "[ -f \"$src\" ] || { echo 'ERROR: Video unavailable' >&2; exit 1; }\n"
                    "cp \"$src\" \"${out%.%(ext)s}.mp4\"\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
    failed = music.download_videos(["fluteAAA25x", "goneForever"], tmp_path / "dl", jobs=2, progress=False)
    assert failed == {"goneForever": "download failed: ERROR: Video unavailable"}
    assert (tmp_path / "dl" / "fluteAAA25x.mp4").is_file()
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(ConfigError, match="pip install"):
        music.download_videos(["x"], tmp_path / "dl2", program="yt-dlp")


# -- cache, training, CLI ----------------------------------------------------------------------------
def test_cache_matches_files_and_refuses_other_settings(music_src, tmp_path):
    root, index, boxes = music_src
    out = tmp_path / "music"
    prepare_music(out, read_music_index(index), root / "videos", read_boxes(boxes), CFG, progress=False)
    cache = build_cache(out, tmp_path / "cache", 64, progress=False)
    files = SoloPairs(out, "test", image_size=64)
    cached = SoloPairs(out, "test", image_size=64, prepared=cache)
    for i in range(3):
        a, b = files[i], cached[i]
        assert (a["audio"] - b["audio"]).abs().max() < 1e-4  # int16 PCM, as the wav files
        assert (a["image"] - b["image"]).abs().mean() < 0.05
        assert (a["gt_mask"] == b["gt_mask"]).float().mean() > 0.97
    with pytest.raises(DataError, match="holds 64 px frames, training uses 96 px"):
        SoloPairs(out, "test", image_size=96, prepared=cache)
    manifest = read_manifest(out)
    (out / "dataset.json").write_text((out / "dataset.json").read_text().replace('"test"', '"val"', 1))
    with pytest.raises(DataError, match="another version of the data"):
        open_cache(cache, read_manifest(out), 64)
    with pytest.raises(DataError, match="not a prepared cache"):
        open_cache(tmp_path / "nowhere", manifest, 64)


def test_short_training_on_prepared_videos(music_src, tmp_path):
    from dsol_lite.stage_one import StageOneConfig, StageOneTrainer

    root, index, boxes = music_src
    out = tmp_path / "music"
    prepare_music(out, read_music_index(index), root / "videos", read_boxes(boxes), CFG, progress=False)
    cache = build_cache(out, tmp_path / "cache", 64, progress=False)
    cfg = StageOneConfig(width=4, image_size=64, batch_size=3, epochs=2, lr=1e-3, num_clusters=2, class_passes=1,
                         prepared=str(cache), checkpoint_every=1000)
    result = StageOneTrainer(out, tmp_path / "run", cfg, progress_bar=False).fit()
    assert result["epochs"] == 2 and 0.0 <= result["best_val_iou@0.5"] <= 1.0
    assert (tmp_path / "run" / "best.pt").is_file() and (tmp_path / "run" / "dictionary.pt").is_file()


def test_cli_prepare_and_cache(music_src, tmp_path, capsys):
    root, index, boxes = music_src
    out = tmp_path / "m"
    assert main(["prepare-music", str(out), "--videos", str(root / "videos"), "--index", str(index), "--boxes",
                 str(boxes), "--segment-seconds", "1.5", "--frame-height", "72", "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "5 videos prepared" in text and "skipped tubaVanished" in text
    assert main(["cache", str(out), str(tmp_path / "c"), "--image-size", "32", "--no-progress"]) == 0
    assert main(["prepare-music", str(out), "--videos", str(root / "videos"), "--index", str(boxes)]) == 2
    assert "MUSIC index" in capsys.readouterr().err


def test_music_index_object_is_what_prepare_uses(tmp_path):
    index = MusicIndex(tmp_path / "i", "solo", {"nothingHere": ("flute",)})
    report = prepare_music(tmp_path / "o", index, tmp_path / "none", None, CFG, progress=False)
    assert report.skipped == {"nothingHere": f"no nothingHere.mp4 (or .mkv/.webm/.mov) in {tmp_path / 'none'}"}


def test_demo_music_boxes_hold_the_instrument(tmp_path):
    from dsol_lite.data.music_demo import _COLOURS, make_demo_music

    src = make_demo_music(tmp_path / "src", videos_per_class=1, seconds=3.0)
    prepare_music(tmp_path / "m", read_music_index(src["index"]), src["videos"], read_boxes(src["boxes"]),
                  PrepareConfig(frame_height=108, val_videos=0), progress=False)
    manifest = read_manifest(tmp_path / "m")
    clips = [read_clip(manifest, e.clip_id) for e in manifest.select("test")]
    assert {c.extra["fps"] for c in clips} == {25.0, 30.0} and len(clips) == 3 * 4
    for clip in clips:  # the box of the key's time is centred on the disk in the frame shown at that time
        x1, y1, x2, y2 = clip.frames[0].objects[0].box
        image = np.asarray(Image.open(manifest.clip_dir(clip.clip_id) / clip.frames[0].file)).astype(int)
        centre = image[(y1 + y2) // 2, (x1 + x2) // 2]
        assert np.abs(centre - _COLOURS[clip.sources[0].label]).max() < 40, clip.extra


def test_duet_index_and_grid2x2_scenes_for_stage_two(music_src, tmp_path):
    """Stage two's MUSIC data: DSOL's 2x2 scenes composed from solo training clips, and duet videos
    prepared from a duet index into the same folder; both load as multi-source scenes."""
    from dsol_lite.data.datasets import MultiSourceScenes

    root, index, _ = music_src
    out = tmp_path / "music"
    cfg = PrepareConfig(segment_seconds=1.5, frames_per_segment=2, frame_height=72, val_videos=0, grid2x2=3)
    prepare_music(out, read_music_index(index), root / "videos", None, cfg, progress=False)
    for v in ("duetFC25xxx", "duetCT30xxx"):
        make_video(root / "videos" / f"{v}.mp4", 3.0, 25 if "25" in v else 30, size=(160, 90))
    duets = write(tmp_path / "duet.json",
                  {"videos": {"flute cello": ["duetFC25xxx"], "cello trumpet": ["duetCT30xxx"]}})
    report = prepare_music(out, read_music_index(duets), root / "videos", None, cfg, progress=False)
    assert report.prepared == ["duetCT30xxx", "duetFC25xxx"] and report.clips["duet/train"] == 2 * 2

    manifest = read_manifest(out)
    grids = [read_clip(manifest, e.clip_id) for e in manifest.clips if e.kind == "grid2x2"]
    assert len(grids) == 3 and report.clips["grid2x2/train"] == 3
    for clip in grids:
        objects = clip.frames[0].objects
        labels = [o.label for o in objects]
        assert len(set(labels)) == 4 and sum(o.sounding for o in objects) == 2 == len(clip.sources)
        assert sorted(o.box for o in objects) == [(0, 0, 128, 128), (0, 128, 128, 256), (128, 0, 256, 128),
                                                  (128, 128, 256, 256)]
        image = np.asarray(Image.open(manifest.clip_dir(clip.clip_id) / clip.frames[0].file))
        assert image.shape == (256, 256, 3)
        for q, tile_id in enumerate(clip.extra["tiles"]):  # each quadrant is its solo clip's middle frame
            tile = read_clip(manifest, tile_id)
            assert tile.sources[0].label == labels[q]
            frame = tile.frames[len(tile.frames) // 2]
            src = Image.open(manifest.clip_dir(tile_id) / frame.file).convert("RGB").resize((128, 128), Image.BILINEAR)
            y, x = (q // 2) * 128, (q % 2) * 128
            assert np.abs(image[y:y + 128, x:x + 128].astype(int) - np.asarray(src, dtype=int)).mean() < 4

    scenes = MultiSourceScenes(out, "train", ("grid2x2", "duet"), image_size=64)
    assert len(scenes) == 3 + 4
    kinds = [scenes.clips[i].kind for i in range(len(scenes))]
    grid_item = scenes[kinds.index("grid2x2")]
    assert int(grid_item["sounding"].sum()) == 2 and int(grid_item["present"].sum()) == 4
    duet_item = scenes[kinds.index("duet")]
    assert int(duet_item["sounding"].sum()) == 2

    too_few = PrepareConfig(segment_seconds=1.5, frames_per_segment=2, frame_height=72, val_videos=0, grid2x2=2)
    three = write(tmp_path / "three.json", {"videos": {"flute": ["fluteEEE30x"], "violin": ["violinCC30x"],
                                                       "trumpet": ["trumpDD25xx"]}})
    with pytest.raises(ConfigError, match="at least 4 classes"):
        prepare_music(tmp_path / "small", read_music_index(three), root / "videos", None, too_few, progress=False)
