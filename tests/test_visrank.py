"""Ranked-result pictures and CSV: query choice by AP, the protocol, border colours, distances."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cacl.checkpoints.io import atomic_save
from cacl.checkpoints.network import load_network
from cacl.cli import main
from cacl.config import load_config
from cacl.data.default import resolve_dataset
from cacl.data.transforms import test_transform
from cacl.data.types import Sample
from cacl.evaluation.extract import extract_features
from cacl.evaluation.network import squared_euclidean
from cacl.models import CACLNet
from cacl.report.visrank import (
    MATCH_COLOUR,
    MISMATCH_COLOUR,
    QUERY_COLOUR,
    Ranking,
    VisrankError,
    cell_box,
    choose_queries,
    top_matches,
    write_visrank,
)


def slow_ap(dist: np.ndarray, q: Sample, gallery: list[Sample]) -> float:
    """AP of one query by the textbook loop: rank, drop same id + same camera, average precision."""
    hits, precisions, kept = 0, [], 0
    for g in np.argsort(dist):
        s = gallery[g]
        if s.pid == q.pid and s.camid == q.camid:
            continue
        kept += 1
        if s.pid == q.pid:
            hits += 1
            precisions.append(hits / kept)
    return float(np.mean(precisions)) if precisions else float("nan")


def slow_top(dist: np.ndarray, q: Sample, gallery: list[Sample], top: int) -> list[int]:
    allowed = [
        g
        for g in range(len(gallery))
        if not (gallery[g].pid == q.pid and gallery[g].camid == q.camid)
    ]
    return sorted(allowed, key=lambda g: dist[g])[:top]


@pytest.fixture
def handmade(tmp_path, image_writer):
    """40 queries and 120 gallery images of 12 identities (and distractors) on 3 cameras, with
    real image files, and random distances made lower for some true matches."""
    rng = np.random.default_rng(3)
    root = tmp_path / "data"
    query = [
        Sample(str(image_writer(root / "query" / f"q{i:03d}.jpg", seed=i)), i % 12 + 1, i % 3)
        for i in range(40)
    ]
    gallery = []
    for j in range(120):
        pid = int(rng.integers(0, 13))  # 0: distractor
        path = image_writer(root / "gallery" / f"g{j:03d}.jpg", seed=1000 + j)
        gallery.append(Sample(str(path), pid, int(rng.integers(0, 3))))
    dist = rng.random((40, 120)).astype(np.float32) * 2
    same = np.array([[q.pid == g.pid for g in gallery] for q in query])
    dist[same] *= rng.random(int(same.sum())).astype(np.float32)
    return root, Ranking.from_distmat(query, gallery, dist)


def test_query_ap_is_the_slow_loop_ap(handmade):
    _, ranking = handmade
    slow = [slow_ap(ranking.distmat[i], q, ranking.gallery) for i, q in enumerate(ranking.query)]
    np.testing.assert_allclose(ranking.query_ap, slow, rtol=1e-12, equal_nan=True)
    assert np.nanmean(slow) == pytest.approx(ranking.result.mAP, rel=1e-12)


@pytest.mark.parametrize("which", ["best", "worst"])
def test_best_and_worst_queries_have_the_extreme_slow_ap(handmade, which):
    _, ranking = handmade
    slow = np.array(
        [slow_ap(ranking.distmat[i], q, ranking.gallery) for i, q in enumerate(ranking.query)]
    )
    valid = np.sort(slow[~np.isnan(slow)])
    chosen = choose_queries(ranking.query_ap, which, 7)
    assert len(set(chosen.tolist())) == 7
    picked = slow[chosen]
    assert not np.isnan(picked).any()
    expected = valid[-7:][::-1] if which == "best" else valid[:7]
    np.testing.assert_allclose(picked, expected)  # the extreme ones, in order


def test_random_queries_are_valid_distinct_and_seeded(handmade):
    _, ranking = handmade
    a = choose_queries(ranking.query_ap, "random", 10, seed=5)
    assert len(set(a.tolist())) == 10 and not np.isnan(ranking.query_ap[a]).any()
    assert np.array_equal(a, choose_queries(ranking.query_ap, "random", 10, seed=5))
    assert len(choose_queries(ranking.query_ap, "random", 1000)) == int(
        (~np.isnan(ranking.query_ap)).sum()
    )
    with pytest.raises(VisrankError, match="one of"):
        choose_queries(ranking.query_ap, "middle", 3)


def test_top_matches_follow_the_protocol(handmade):
    _, ranking = handmade
    rows = top_matches(ranking, range(len(ranking.query)), 6)
    for row in rows:
        q = ranking.query[row.query]
        assert row.gallery.tolist() == slow_top(ranking.distmat[row.query], q, ranking.gallery, 6)
        assert row.match.tolist() == [ranking.gallery[g].pid == q.pid for g in row.gallery]


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def border_pixels(image: Image.Image, box: tuple[int, int, int, int]) -> list[tuple]:
    """One pixel in the middle of each of the four border strips, and the corners."""
    x0, y0, x1, y1 = box
    mx, my = (x0 + x1) // 2, (y0 + y1) // 2
    points = [(mx, y0 + 1), (mx, y1 - 2), (x0 + 1, my), (x1 - 2, my), (x0, y0), (x1 - 1, y1 - 1)]
    return [image.getpixel(p) for p in points]


def check_pictures_and_csv(
    csv_path: Path, pictures: list[Path], ranking: Ranking, root: Path, top: int
) -> None:
    """Each CSV row matches the distance matrix and the protocol; each border has its colour."""
    names = {str(Path(s.path).relative_to(root)): i for i, s in enumerate(ranking.gallery)}
    qnames = {str(Path(s.path).relative_to(root)): i for i, s in enumerate(ranking.query)}
    rows = read_csv(csv_path)
    assert rows and len(pictures) == len({r["order"] for r in rows})
    for order, picture in enumerate(pictures, start=1):
        mine = [r for r in rows if int(r["order"]) == order]
        q = qnames[mine[0]["query"]]
        assert picture.name.startswith(f"{order:03d}_{Path(ranking.query[q].path).stem}")
        expected = slow_top(ranking.distmat[q], ranking.query[q], ranking.gallery, top)
        assert [names[r["gallery"]] for r in mine] == expected
        assert [int(r["rank"]) for r in mine] == list(range(1, len(expected) + 1))
        image = Image.open(picture).convert("RGB")
        assert set(border_pixels(image, cell_box(0, 0))) == {QUERY_COLOUR}
        for r in mine:
            g = names[r["gallery"]]
            assert float(r["distance"]) == pytest.approx(float(ranking.distmat[q, g]), abs=1e-6)
            assert float(r["query_ap"]) == pytest.approx(ranking.query_ap[q], abs=1e-6)
            match = ranking.gallery[g].pid == ranking.query[q].pid
            assert r["match"] == str(int(match))
            colour = MATCH_COLOUR if match else MISMATCH_COLOUR
            assert set(border_pixels(image, cell_box(0, int(r["rank"])))) == {colour}


@pytest.mark.parametrize("which", ["best", "worst", "random"])
def test_pictures_and_csv_agree_with_the_distance_matrix(handmade, tmp_path, which):
    root, ranking = handmade
    out = write_visrank(ranking, tmp_path / "out", which=which, n=5, top=8, root=root)
    assert len(out.pictures) == 5
    check_pictures_and_csv(out.csv, out.pictures, ranking, root, top=8)
    if which == "best":
        matches = np.concatenate([row.match for row in out.rows])
        assert matches.any() and not matches.all()  # both colours were checked


def test_bad_arguments_are_clear_errors(handmade, tmp_path):
    _, ranking = handmade
    with pytest.raises(VisrankError, match="at least 1"):
        write_visrank(ranking, tmp_path, n=0)
    with pytest.raises(VisrankError, match="--top"):
        write_visrank(ranking, tmp_path, top=0)


# ---------------------------------------------------------------------------- the command


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    """A random-init ResNet-18 checkpoint (saved as the trainer saves best.pt) trained on the
    cached tiny synthetic set, and that cache."""
    cache = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CACL_CACHE", str(cache))
        cfg = load_config("smoke", ["data.height=32", "data.width=16"])
        torch.manual_seed(0)
        net = CACLNet("resnet18", "none", cfg.model.last_stride, True, True)
        run = tmp_path_factory.mktemp("run")
        state = {"format": "cacl-model-v1", "config": cfg.to_dict(), "epoch": 1}
        atomic_save({**state, "model": net.state_dict(), "metrics": {"mAP": 0.0}}, run / "best.pt")
        yield run


def test_visrank_command_on_the_synthetic_set(tiny_checkpoint, tmp_path, capsys):
    out_dir = tmp_path / "pictures"
    argv = ["visrank", str(tiny_checkpoint), "--data", "synthetic", "--which", "best"]
    argv += ["--n", "4", "--top", "5", "--output", str(out_dir), "--device", "cpu"]
    assert main([*argv, "--workers", "0", "--no-progress"]) == 0
    assert "4 best queries" in capsys.readouterr().out

    net, cfg, _ = load_network(tiny_checkpoint)
    dataset = resolve_dataset(
        **cfg.data.dataset_options()
    )  # the cached tiny set, as the command found it
    transform = test_transform(cfg.data.height, cfg.data.width)
    qf = extract_features(net, dataset.query, transform, progress=False)
    gf = extract_features(net, dataset.gallery, transform, progress=False)
    ranking = Ranking.from_distmat(dataset.query, dataset.gallery, squared_euclidean(qf, gf))
    slow = np.array(
        [slow_ap(ranking.distmat[i], q, dataset.gallery) for i, q in enumerate(dataset.query)]
    )
    rows = read_csv(out_dir / "ranked.csv")
    qnames = {str(Path(s.path).relative_to(dataset.root)): i for i, s in enumerate(dataset.query)}
    chosen = [qnames[r["query"]] for r in rows if r["rank"] == "1"]
    assert len(chosen) == 4
    np.testing.assert_allclose(slow[chosen], np.sort(slow[~np.isnan(slow)])[::-1][:4])

    pictures = sorted(out_dir.glob("*.png"))
    check_pictures_and_csv(out_dir / "ranked.csv", pictures, ranking, Path(dataset.root), top=5)


def test_visrank_command_reports_bad_input(tiny_checkpoint, tmp_path, capsys):
    assert main(["visrank", str(tmp_path / "missing.pt"), "--device", "cpu"]) == 1
    assert "checkpoint not found" in capsys.readouterr().err
    assert main(["visrank", str(tiny_checkpoint), "--n", "0"]) == 1
    assert "at least 1" in capsys.readouterr().err
