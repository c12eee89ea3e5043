"""GalleryIndex: exact search equals brute force, approximate recall, persistence, CLI."""

from __future__ import annotations

import json
import math
import sys

import numpy as np
import pytest
import torch

from cacl.cli import main
from cacl.inference import FeatureExtractor, GalleryIndex, GalleryIndexError
from cacl.inference import index as index_module
from conftest import write_image
from model_factory import save_random_checkpoint

faiss = pytest.importorskip("faiss")


def unit_rows(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.standard_normal((n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def clustered_rows(rng: np.random.Generator, n: int, d: int, clusters: int) -> np.ndarray:
    centers = unit_rows(rng, clusters, d)
    x = centers[rng.integers(0, clusters, n)] + 0.08 * rng.standard_normal((n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def brute_force(query: np.ndarray, gallery: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Every squared distance by a plain difference, then a stable sort."""
    dist = np.array([[float(((q - g) ** 2).sum()) for g in gallery] for q in query])
    order = np.argsort(dist, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(dist, order, 1), order


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(found, truth)]))


def names(n: int) -> list[str]:
    return [f"img{i:05d}.jpg" for i in range(n)]


def test_exact_index_equals_brute_force():
    rng = np.random.default_rng(0)
    gallery, query = unit_rows(rng, 400, 32), unit_rows(rng, 25, 32)
    index = GalleryIndex.build(torch.from_numpy(gallery), names(400), kind="flat")
    distances, indices = index.search(query, k=10)
    want_d, want_i = brute_force(query, gallery, 10)
    np.testing.assert_array_equal(indices, want_i)
    np.testing.assert_allclose(distances, want_d, atol=1e-5)
    assert index.search(query[0], k=1000)[1].shape == (1, 400)  # one query; k clipped to N
    hits = index.search_names(query[:2], k=3)
    assert [n for n, _ in hits[1]] == [f"img{i:05d}.jpg" for i in want_i[1, :3]]
    with pytest.raises(GalleryIndexError, match="32"):
        index.search(np.zeros((1, 8), np.float32))
    with pytest.raises(GalleryIndexError, match="names"):
        GalleryIndex.build(gallery, names(399))
    with pytest.raises(GalleryIndexError, match="no features"):
        GalleryIndex.build(np.empty((0, 32), np.float32), [])
    with pytest.raises(GalleryIndexError, match="kind must be one of"):
        GalleryIndex.build(gallery, names(400), kind="lsh")


def test_approximate_indexes_find_most_of_the_true_neighbours():
    rng = np.random.default_rng(1)
    k = 10
    uniform, uq = unit_rows(rng, 3000, 64), unit_rows(rng, 100, 64)
    hnsw = GalleryIndex.build(uniform, names(3000), kind="auto", threshold=1000)
    assert hnsw.kind == "hnsw"
    truth = brute_force(uq, uniform, k)[1]
    assert recall(hnsw.search(uq, k)[1], truth) >= 0.9
    # IVF needs the structure re-ID features have (clusters); searching every cell is exact
    clustered, cq = clustered_rows(rng, 4000, 64, 200), clustered_rows(rng, 100, 64, 200)
    truth = brute_force(cq, clustered, k)[1]
    ivf = GalleryIndex.build(clustered, names(4000), kind="ivf")
    assert ivf.params["nprobe"] == math.ceil(ivf.params["nlist"] / 8)
    assert recall(ivf.search(cq, k)[1], truth) >= 0.75  # 0.85 measured with this seed
    wider = GalleryIndex.build(clustered, names(4000), kind="ivf", nprobe=ivf.params["nlist"] // 4)
    assert recall(wider.search(cq, k)[1], truth) >= 0.95  # 0.999 measured
    exhaustive = GalleryIndex.build(clustered, names(4000), kind="ivf", nlist=20, nprobe=20)
    np.testing.assert_array_equal(exhaustive.search(cq, k)[1], truth)
    assert GalleryIndex.build(uniform, names(3000), threshold=3001).kind == "flat"


@pytest.mark.parametrize("kind", ["flat", "ivf", "hnsw"])
def test_save_load_round_trip(kind, tmp_path):
    rng = np.random.default_rng(2)
    gallery, query = clustered_rows(rng, 800, 16, 40), unit_rows(rng, 5, 16)
    index = GalleryIndex.build(gallery, names(800), kind=kind, info={"root": "/data/g"})
    index.save(tmp_path / "idx")
    loaded = GalleryIndex.load(tmp_path / "idx")
    assert (loaded.kind, loaded.names, loaded.dim) == (kind, index.names, 16)
    assert loaded.info["root"] == "/data/g" and loaded.params == index.params
    for a, b in zip(index.search(query, 7), loaded.search(query, 7)):
        np.testing.assert_array_equal(a, b)
    manifest = json.loads((tmp_path / "idx" / "manifest.json").read_text())
    assert manifest["count"] == 800 and manifest["distance"] == "squared_euclidean"
    assert [p.name for p in tmp_path.iterdir()] == ["idx"]  # no temporary folder left
    import os
    import stat

    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE((tmp_path / "idx").stat().st_mode) == 0o777 & ~umask  # not owner-only


def test_save_is_atomic_and_careful(tmp_path, monkeypatch):
    rng = np.random.default_rng(3)
    old = GalleryIndex.build(unit_rows(rng, 50, 8), names(50), kind="flat")
    old.save(tmp_path / "idx")
    new = GalleryIndex.build(unit_rows(rng, 60, 8), names(60), kind="flat")
    with pytest.raises(GalleryIndexError, match="--overwrite"):
        new.save(tmp_path / "idx")

    def crash(*args, **kwargs):
        raise OSError("disk full")

    with monkeypatch.context() as m:
        m.setattr(index_module.np, "save", crash)
        with pytest.raises(OSError, match="disk full"):
            new.save(tmp_path / "idx", overwrite=True)
    assert len(GalleryIndex.load(tmp_path / "idx")) == 50  # the old index is intact
    assert [p.name for p in tmp_path.iterdir()] == ["idx"]
    new.save(tmp_path / "idx", overwrite=True)
    assert len(GalleryIndex.load(tmp_path / "idx")) == 60
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(GalleryIndexError, match="not a cacl index"):
        new.save(tmp_path / "other", overwrite=True)
    with pytest.raises(GalleryIndexError, match="not a cacl index"):
        GalleryIndex.load(tmp_path / "other")
    with pytest.raises(GalleryIndexError, match="index folder not found"):
        GalleryIndex.load(tmp_path / "missing")
    (tmp_path / "idx" / "names.json").write_text(json.dumps(names(59)))
    with pytest.raises(GalleryIndexError, match="inconsistent"):
        GalleryIndex.load(tmp_path / "idx")


def test_flat_index_works_without_faiss(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "faiss", None)  # as if faiss were not installed
    rng = np.random.default_rng(4)
    gallery = unit_rows(rng, 30, 8)
    GalleryIndex.build(gallery, names(30), kind="flat").save(tmp_path / "idx")
    assert GalleryIndex.load(tmp_path / "idx").search(gallery[3], 1)[1][0, 0] == 3
    with pytest.raises(GalleryIndexError, match=r"pip install 'cacl\[faiss\]'"):
        GalleryIndex.build(gallery, names(30), kind="hnsw")


@pytest.fixture(scope="module")
def gallery_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("gallery")
    for i in range(12):
        write_image(root / f"cam{i % 3}" / f"{i:04d}.jpg", seed=i, size=(40, 20))
    (root / "cam0" / "broken.jpg").write_bytes(b"garbage")
    (root / "notes.txt").write_text("not an image")
    return root


def test_cli_build_and_search_end_to_end(gallery_dir, tmp_path, capsys):
    checkpoint = save_random_checkpoint(tmp_path / "run" / "best.pt", "resnet18", 32, 16)
    out = tmp_path / "index"
    args = ["index", "build", str(tmp_path / "run"), str(gallery_dir), str(out), "--workers", "2"]
    assert main([*args, "--device", "cpu", "--batch-size", "4"]) == 0
    printed = capsys.readouterr().out
    assert "indexed 12 images" in printed and "skipped 1 unreadable" in printed
    assert "cam0/broken.jpg" in printed
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["kind"] == "flat" and manifest["checkpoint"] == str(checkpoint.resolve())
    assert manifest["skipped"][0]["name"] == "cam0/broken.jpg"

    queries = [gallery_dir / "cam1" / "0004.jpg", gallery_dir / "cam2" / "0011.jpg"]
    assert main(["index", "search", str(out), *map(str, queries), "--top", "3", "--json"]) == 0
    results = json.loads(capsys.readouterr().out)
    assert [r["query"] for r in results] == list(map(str, queries))
    extractor = FeatureExtractor(checkpoint, device="cpu")
    gallery = sorted(p for p in gallery_dir.rglob("*.jpg") if p.name != "broken.jpg")
    gf, qf = extractor(gallery), extractor(queries)
    for result, q in zip(results, qf):
        expected = ((gf - q) ** 2).sum(1).sort()
        got = [r["distance"] for r in result["results"]]
        np.testing.assert_allclose(got, expected.values[:3].numpy(), atol=1e-5)
        assert [r["path"] for r in result["results"]] == [
            str(gallery[i]) for i in expected.indices[:3]
        ]
    assert results[0]["results"][0]["name"] == "cam1/0004.jpg"  # a gallery image finds itself

    assert main(["index", "search", str(out), str(queries[0]), "--top", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"query {queries[0]}:" and len(lines) == 3
    assert lines[1].split()[0] == "1" and lines[1].endswith("cam1/0004.jpg")


def test_cli_errors(gallery_dir, tmp_path, capsys):
    checkpoint = save_random_checkpoint(tmp_path / "best.pt", "resnet18", 32, 16)
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    assert main(["index", "build", str(checkpoint), str(tmp_path / "empty"), "x"]) == 1
    assert "no images under" in capsys.readouterr().err
    assert main(["index", "search", str(tmp_path / "nothing"), "q.jpg"]) == 1
    assert "index folder not found" in capsys.readouterr().err

    out = tmp_path / "idx"
    build = ["index", "build", str(checkpoint), str(gallery_dir), str(out)]
    assert main([*build, "--no-progress"]) == 0
    assert main(build) == 1
    assert "--overwrite" in capsys.readouterr().err
    query = str(gallery_dir / "cam0" / "0000.jpg")
    assert main(["index", "search", str(out), str(tmp_path / "q.jpg")]) == 1
    assert "image not found" in capsys.readouterr().err
    save_random_checkpoint(checkpoint, "resnet18", 32, 16, seed=1)  # the model changes
    assert main(["index", "search", str(out), query]) == 1
    assert "changed since the index was built" in capsys.readouterr().err
    assert main(["index", "search", str(out), query, "--checkpoint", str(checkpoint)]) == 0
    other = save_random_checkpoint(tmp_path / "big.pt", "resnet18", 64, 32)
    assert main(["index", "search", str(out), query, "--checkpoint", str(other)]) == 1
    assert "built at 32x16 pixels" in capsys.readouterr().err
