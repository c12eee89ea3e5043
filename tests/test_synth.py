"""The synthetic Market-1501-style generator: determinism, layout, counts, output-folder rules."""

from __future__ import annotations

import dataclasses
import json
import re
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cacl.cli import main
from cacl.data.synth import PRESETS, SynthConfig, SynthConfigError, SynthOutputError, generate
from cacl.data.synth.camera import BACKGROUND_FIELDS, SENSOR_FIELDS, sample_cameras
from cacl.data.synth.generate import image_camera, render_spec
from cacl.data.synth.identity import PALETTE
from cacl.data.synth.plan import CAMERAS, GALLERY_DIR, QUERY_DIR, TRAIN_DIR, plan_dataset, stream

NAME = re.compile(r"^(-1|\d{4})_c(\d)s(\d)_(\d{6})_(\d{2})\.jpg$")
SPLITS = (TRAIN_DIR, QUERY_DIR, GALLERY_DIR)


def files(root: Path) -> dict[str, bytes]:
    """Every image of a generated dataset, by relative path."""
    return {
        f"{split}/{p.name}": p.read_bytes() for split in SPLITS for p in (root / split).iterdir()
    }


def parse(root: Path, split: str) -> list[tuple[int, int]]:
    """``(pid, cam)`` of every file of a split; fails on a name that is not Market-style."""
    out = []
    for p in sorted((root / split).iterdir()):
        m = NAME.match(p.name)
        assert m, f"bad name {p.name}"
        out.append((int(m.group(1)), int(m.group(2))))
    return out


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("synth") / "tiny"
    return root, generate(root, preset="tiny", seed=0, workers=1, progress=False)


def test_same_seed_gives_identical_files_whatever_the_workers(tiny, tmp_path):
    root, _ = tiny
    summary = generate(tmp_path / "b", preset="tiny", seed=0, workers=2, progress=False)
    assert not summary["skipped"]
    assert files(root) == files(tmp_path / "b")
    # synth.json records nothing that changes from run to run (no timing).
    assert (root / "synth.json").read_bytes() == (tmp_path / "b" / "synth.json").read_bytes()


def test_other_seed_gives_other_images(tiny, tmp_path):
    root, _ = tiny
    generate(tmp_path / "c", preset="tiny", seed=1, workers=1, progress=False)
    a, b = files(root), files(tmp_path / "c")
    assert a.keys() != b.keys()
    assert sorted(a.values())[:10] != sorted(b.values())[:10]


def test_layout_names_and_splits(tiny):
    root, summary = tiny
    cfg = PRESETS["tiny"]
    train, query, gallery = (parse(root, s) for s in SPLITS)
    train_ids = {pid for pid, _ in train}
    test_ids = {pid for pid, _ in query}
    assert len(train_ids) == cfg.num_train_ids and len(test_ids) == cfg.num_test_ids
    assert not train_ids & test_ids
    assert 0 not in train_ids | test_ids and -1 not in train_ids | test_ids
    # Every identity is seen by at least 2 cameras.
    for split in (train, query):
        cams = defaultdict(set)
        for pid, cam in split:
            cams[pid].add(cam)
        assert all(len(c) >= 2 for c in cams.values())
    # Exactly one query per (test id, camera) where the identity appears in the test set.
    assert len(query) == len(set(query))
    person_gallery = [(pid, cam) for pid, cam in gallery if pid > 0]
    assert {pid for pid, _ in person_gallery} == test_ids
    assert set(person_gallery) | set(query) == set(query)
    # Distractors and junk are in the gallery only.
    assert sum(pid == 0 for pid, _ in gallery) == cfg.num_distractors
    assert sum(pid == -1 for pid, _ in gallery) == cfg.num_junk
    assert all(pid > 0 for pid, _ in train + query)
    assert all(1 <= cam <= cfg.num_cams for pid, cam in train + query + gallery)
    with Image.open(next((root / QUERY_DIR).iterdir())) as img:
        assert img.format == "JPEG" and img.size == (64, 128) and img.mode == "RGB"


def test_counts_match_summary_and_metadata(tiny):
    root, summary = tiny
    counts = summary["counts"]
    cfg = PRESETS["tiny"]
    assert counts["train_images"] == len(list((root / TRAIN_DIR).iterdir()))
    assert counts["train_images"] == cfg.num_train_images
    assert counts["query_images"] == len(list((root / QUERY_DIR).iterdir()))
    assert counts["gallery_images"] == len(list((root / GALLERY_DIR).iterdir()))
    assert counts["query_images"] + counts["gallery_images"] == (
        cfg.num_test_images + cfg.num_distractors + cfg.num_junk
    )
    meta = json.loads((root / "synth.json").read_text())
    assert meta["complete"] and meta["seed"] == 0 and meta["counts"] == counts
    assert SynthConfig(**meta["config"]) == cfg


def test_existing_output_rules(tiny, tmp_path):
    root, _ = tiny
    # The same config again: nothing to do.
    assert generate(root, preset="tiny", seed=0, workers=1, progress=False)["skipped"]
    # A synth folder of another config is refused unless overwrite is asked for.
    with pytest.raises(SynthOutputError, match="other settings") as refused:
        generate(root, preset="tiny", seed=5, progress=False)
    assert "use --overwrite (overwrite=True from Python)" in str(refused.value)
    # A non-empty folder that is not a synth output is always refused.
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(SynthOutputError, match="not a synthetic dataset"):
        generate(tmp_path, preset="tiny", overwrite=True, progress=False)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_overwrite_replaces_a_previous_synth_output(tmp_path):
    few = {"ids": 2, "test_ids": 2, "distractors": 1, "junk": 1, "workers": 1, "progress": False}
    generate(tmp_path / "a", preset="tiny", seed=0, **few)
    with pytest.raises(SynthOutputError):
        generate(tmp_path / "a", preset="tiny", seed=0, cams=2, **few)
    summary = generate(tmp_path / "a", preset="tiny", seed=0, cams=2, overwrite=True, **few)
    assert not summary["skipped"] and summary["config"]["num_cams"] == 2
    generate(tmp_path / "b", preset="tiny", seed=0, cams=2, **few)
    assert files(tmp_path / "a") == files(tmp_path / "b")  # no file of the old set is left
    # A dataset of the same settings made by an older generator is generated again.
    meta_path = tmp_path / "b" / "synth.json"
    meta = json.loads(meta_path.read_text())
    meta["generator_version"] -= 1
    meta_path.write_text(json.dumps(meta))
    assert not generate(tmp_path / "b", preset="tiny", seed=0, cams=2, **few)["skipped"]
    assert json.loads(meta_path.read_text())["generator_version"] == meta["generator_version"] + 1


def test_bad_settings_are_refused():
    with pytest.raises(SynthConfigError, match="unknown synth preset"):
        SynthConfig.from_preset("huge")
    with pytest.raises(SynthConfigError, match="unknown synth setting"):
        SynthConfig.from_preset("tiny", colours=3)
    with pytest.raises(SynthConfigError, match="2 cameras"):
        SynthConfig.from_preset("tiny", cams=1)
    assert SynthConfig.from_preset("tiny", ids=3, cams=None).num_train_ids == 3


def test_cli_writes_a_dataset(tmp_path, capsys):
    out = tmp_path / "cli"
    argv = ["synth", str(out), "--preset", "tiny", "--ids", "2", "--test-ids", "2", "--cams", "2"]
    assert main([*argv, "--workers", "1", "--no-progress"]) == 0
    assert "train 2 ids" in capsys.readouterr().out
    assert len(list((out / TRAIN_DIR).iterdir())) == 12
    assert main(["synth", str(tmp_path), "--preset", "tiny"]) == 1  # not empty, not a synth set
    assert "not a synthetic dataset" in capsys.readouterr().err


def test_image_streams_do_not_depend_on_each_other():
    cfg = PRESETS["tiny"]
    specs = plan_dataset(cfg, 0)
    a = render_spec(specs[5], cfg, 0)[0]
    render_spec(specs[9], cfg, 0)
    assert np.array_equal(a, render_spec(specs[5], cfg, 0)[0])


# Mean pixel (R, G, B) and JPEG quality of a few images of ``tiny`` (seed 0), recorded before the
# background / sensor / cast knobs existed: their defaults must draw the same random numbers and
# give the same images (a tolerance, as numpy's float maths may round differently elsewhere).
GOLDEN = {
    3: ((140.874, 99.269, 122.062), 83),  # person, camera 2
    37: ((133.281, 110.671, 127.09), 90),  # person, camera 3
    80: ((134.305, 135.478, 141.531), 83),  # person, camera 1
    153: ((158.048, 102.69, 144.682), 83),  # distractor
    160: ((137.929, 154.606, 156.475), 83),  # junk
}


def looks(cfg: SynthConfig, seed: int = 0) -> list:
    """``(spec, camera settings)`` of every planned image of ``cfg``."""
    return [(spec, image_camera(spec, cfg, seed)) for spec in plan_dataset(cfg, seed)]


def test_default_knobs_give_the_images_of_before(tiny):
    cfg = PRESETS["tiny"]
    explicit = SynthConfig.from_preset("tiny", background="camera", sensor="camera", cast=1.0)
    assert explicit == cfg
    specs = plan_dataset(cfg, 0)
    for index, (mean, quality) in GOLDEN.items():
        pixels, q = render_spec(specs[index], cfg, 0)
        assert q == quality
        assert np.allclose(pixels.reshape(-1, 3).mean(0), mean, atol=0.02), index
    # The colour matrices at cast 1 are the drawn ones, not a rounded interpolation.
    drawn = sample_cameras(stream(0, CAMERAS), 3, 90)
    for a, b in zip(drawn, sample_cameras(stream(0, CAMERAS), 3, 90, cast=1.0), strict=True):
        assert np.array_equal(a.color_matrix, b.color_matrix)
    meta = json.loads((tiny[0] / "synth.json").read_text())
    assert "seconds" not in meta
    assert {k: meta["config"][k] for k in ("background", "sensor", "cast")} == {
        "background": "camera",
        "sensor": "camera",
        "cast": 1.0,
    }


def test_shared_background_is_drawn_from_all_cameras():
    cfg = PRESETS["tiny"]
    shared = dataclasses.replace(cfg, background="shared")
    own = {c: cam for c, cam in enumerate(sample_cameras(stream(0, CAMERAS), 3, 90))}
    styles = {cam.background for cam in own.values()}
    per_cam: dict[int, set] = defaultdict(set)
    for spec, look in looks(cfg):
        per_cam[spec.cam].add(look.background)
    assert all(len(s) == 1 for s in per_cam.values())  # one style per camera
    per_cam.clear()
    donors: dict[int, set] = defaultdict(set)
    for spec, look in looks(shared):
        per_cam[spec.cam].add(look.background)
        donors[spec.cam] |= {
            c for c, cam in own.items() if np.array_equal(cam.bg_colors, look.bg_colors)
        }
        for name in ("color_matrix", *SENSOR_FIELDS):  # the rest stays the camera's
            assert np.array_equal(getattr(look, name), getattr(own[spec.cam], name))
    assert all(s == styles for s in per_cam.values())  # every camera shows every style
    assert all(d == set(own) for d in donors.values())  # and every camera's colours
    # The images are rendered with these settings.
    spec = plan_dataset(cfg, 0)[3]
    assert image_camera(spec, shared, 0).background != own[spec.cam].background
    assert not np.array_equal(render_spec(spec, shared, 0)[0], render_spec(spec, cfg, 0)[0])


def test_shared_sensor_draws_per_image_settings_from_all_cameras():
    cfg = PRESETS["tiny"]
    own = sample_cameras(stream(0, CAMERAS), 3, 90)
    for spec, look in looks(cfg):
        assert all(getattr(look, f) == getattr(own[spec.cam], f) for f in SENSOR_FIELDS)
    shared = dataclasses.replace(cfg, sensor="shared")
    both = dataclasses.replace(shared, background="shared")
    used: dict[tuple[int, str], set] = defaultdict(set)
    for (spec, look), (_, look_both) in zip(looks(shared), looks(both), strict=True):
        for f in SENSOR_FIELDS:
            pool = [getattr(cam, f) for cam in own]
            assert getattr(look, f) in pool
            used[spec.cam, f].add(getattr(look, f))
            assert getattr(look_both, f) == getattr(look, f)  # independent of the other knob
        assert np.array_equal(look.color_matrix, own[spec.cam].color_matrix)
        assert look.occlusion == own[spec.cam].occlusion
        assert all(
            np.array_equal(getattr(look, f), getattr(own[spec.cam], f)) for f in BACKGROUND_FIELDS
        )
    # Every camera's images use every camera's value of every setting (two cameras may share
    # a JPEG quality).
    for (_, f), values in used.items():
        assert values == {getattr(cam, f) for cam in own}, f
    qualities = {render_spec(spec, shared, 0)[1] for spec, _ in looks(shared)[:40]}
    assert qualities == {cam.jpeg_quality for cam in own}


def test_cast_scales_the_colour_cast_towards_none():
    full, half, none = (sample_cameras(stream(0, CAMERAS), 3, 90, cast=c) for c in (1.0, 0.5, 0.0))
    gray = np.full(3, 0.5, dtype=np.float32)
    garment = PALETTE[3]
    for f, h, n in zip(full, half, none, strict=True):
        assert np.allclose(n.color_matrix, np.eye(3))
        assert np.allclose(h.color_matrix, (f.color_matrix + np.eye(3)) / 2, atol=1e-6)
        assert n.gamma == f.gamma and np.array_equal(n.bg_colors, f.bg_colors)  # same draws
        # Without a cast, gray stays gray and a garment's colour is the scene's (gamma undone).
        assert np.ptp(n.tone(gray)) < 1e-6
        assert np.allclose(n.tone(garment) ** n.gamma, garment, atol=1e-5)
    assert min(np.ptp(f.tone(gray)) for f in full) > 0.02  # with the cast, gray is tinted

    def chroma(cam, rgb):
        linear = cam.tone(rgb) ** cam.gamma
        return linear / linear.sum()

    for rgb in (gray, garment):
        assert np.ptp([chroma(c, rgb) for c in none], axis=0).max() < 1e-6
        assert np.ptp([chroma(c, rgb) for c in full], axis=0).max() > 0.02
    cfg = SynthConfig.from_preset("tiny", cast=0)
    spec = plan_dataset(cfg, 0)[3]
    assert np.allclose(image_camera(spec, cfg, 0).color_matrix, np.eye(3))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"cast": -0.1}, "cast must be >= 0"),
        ({"cast": float("nan")}, "finite number"),
        ({"cast": "1"}, "finite number"),
        ({"cast": True}, "finite number"),
        ({"background": "Shared"}, "background must be 'camera'"),
        ({"sensor": "per_image"}, "sensor must be 'camera'"),
    ],
)
def test_bad_knob_values_are_refused(overrides, message):
    with pytest.raises(SynthConfigError, match=message):
        SynthConfig.from_preset("tiny", **overrides)
    with pytest.raises(SynthConfigError, match=message):
        dataclasses.replace(PRESETS["tiny"], **overrides).validate()


def test_knobs_are_recorded_and_part_of_the_dataset_identity(tmp_path, capsys):
    few = {"ids": 2, "test_ids": 2, "distractors": 1, "junk": 1, "workers": 1, "progress": False}
    generate(tmp_path / "a", preset="tiny", seed=0, cast=0.5, **few)
    with pytest.raises(SynthOutputError, match="other settings"):
        generate(tmp_path / "a", preset="tiny", seed=0, **few)
    assert generate(tmp_path / "a", preset="tiny", seed=0, cast=0.5, **few)["skipped"]
    # A synth.json written before these settings existed (and with a timing) means the defaults.
    generate(tmp_path / "b", preset="tiny", seed=0, **few)
    meta_path = tmp_path / "b" / "synth.json"
    meta = json.loads(meta_path.read_text())
    for name in ("background", "sensor", "cast"):
        del meta["config"][name]
    meta_path.write_text(json.dumps({**meta, "seconds": 1.5}))
    summary = generate(tmp_path / "b", preset="tiny", seed=0, **few)
    assert summary["skipped"] and "seconds" not in summary
    assert summary["config"]["cast"] == 1.0
    with pytest.raises(SynthOutputError, match="other settings"):
        generate(tmp_path / "b", preset="tiny", seed=0, sensor="shared", **few)
    # The command line passes the knobs on.
    out = tmp_path / "cli"
    argv = ["synth", str(out), "--preset", "tiny", "--ids", "2", "--test-ids", "2"]
    knobs = ["--background", "shared", "--sensor", "shared", "--cast", "0.25"]
    assert main([*argv, *knobs, "--workers", "1", "--no-progress"]) == 0
    capsys.readouterr()
    config = json.loads((out / "synth.json").read_text())["config"]
    assert (config["background"], config["sensor"], config["cast"]) == ("shared", "shared", 0.25)
    with pytest.raises(SystemExit):
        main([*argv, "--sensor", "none"])
