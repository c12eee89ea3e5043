"""The synthetic Market-1501-style generator: determinism, layout, counts, output-folder rules."""

from __future__ import annotations

import json
import re
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cacl.cli import main
from cacl.data.synth import PRESETS, SynthConfig, SynthConfigError, SynthOutputError, generate
from cacl.data.synth.plan import GALLERY_DIR, QUERY_DIR, TRAIN_DIR

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
    with pytest.raises(SynthOutputError, match="other settings"):
        generate(root, preset="tiny", seed=5, progress=False)
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
    from cacl.data.synth.generate import render_spec
    from cacl.data.synth.plan import plan_dataset

    cfg = PRESETS["tiny"]
    specs = plan_dataset(cfg, 0)
    a = render_spec(specs[5], cfg, 0)[0]
    render_spec(specs[9], cfg, 0)
    assert np.array_equal(a, render_spec(specs[5], cfg, 0)[0])
