"""Folding the journal into the snapshot: LiveIndex.compact, `cacl index compact`, crashes."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cacl.cli import main
from cacl.inference import GalleryIndex, GalleryIndexError
from cacl.inference import snapshot as snapshot_module
from cacl.inference.journal import JOURNAL, MAGIC, Journal
from cacl.inference.live import LiveIndex, NewImage
from test_index_live import jpeg, names, new_images, unit_rows

pytest.importorskip("faiss")


def build(tmp_path, kind: str):
    """A snapshot of 60 images (cameras 1-3 in their names) and 6 added ones, camera "7"."""
    rng = np.random.default_rng(11)
    x, extra = unit_rows(rng, 60, 8), unit_rows(rng, 6, 8)
    root = tmp_path / "gallery"
    root.mkdir()
    for name in names(2):
        (root / name).write_bytes(jpeg(0))
    folder = tmp_path / "idx"
    GalleryIndex.build(x, names(60), kind=kind, info={"root": str(root)}).save(folder)
    images = new_images(list(range(5)), "7")
    images.append(NewImage(jpeg(5), "no camera here.jpg", ".jpg", "7"))  # not of cam_regex
    with LiveIndex.open(folder, writable=True) as live:
        added = [a.name for a in live.add_images(images, extra)]
    return folder, np.concatenate([x, extra]), added


def answers(live: LiveIndex, probes: np.ndarray) -> list[list[tuple[str, float, str | None]]]:
    return [[(h.name, h.distance, h.camera) for h in live.search(p, 8)] for p in probes]


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_compact_keeps_every_image_and_empties_the_journal(tmp_path, kind):
    folder, x, added = build(tmp_path, kind)
    probes = x[[0, 30, 61, 65]]
    with LiveIndex.open(folder) as before:
        expected, stats = answers(before, probes), before.stats()
    assert stats["journal_rows"] == 6 and stats["added"] == 6

    with LiveIndex.open(folder, writable=True) as live:
        assert live.compact() == 6
        assert answers(live, probes) == expected  # searches in the same process go on
        assert live.compact() == 0  # nothing left to fold
    assert (folder / JOURNAL).read_bytes() == MAGIC
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["generation"] == 1 and manifest["count"] == 66
    data = "features.g1.npy" if kind == "flat" else "index.g1.faiss"
    assert manifest["files"] == {"names": "names.g1.json", "index": data}
    assert not (folder / "names.json").exists()  # the old generation is gone

    with LiveIndex.open(folder) as reopened:  # nothing replayed: it is all in the snapshot
        assert reopened.base_size == 66 and len(reopened) == 66
        assert answers(reopened, probes) == expected
        assert {**reopened.stats(), "snapshot_size": 60} == {**stats, "journal_rows": 0}
        assert reopened.camera_of(added[5]) == "7" and reopened.camera_of(names(60)[4]) == "2"
        assert reopened.stats()["cameras"] == {"1": 20, "2": 20, "3": 20, "7": 6}
        assert reopened.file_of(added[0]).read_bytes() == new_images([0])[0].data
        assert reopened.file_of(names(1)[0]) == tmp_path / "gallery" / names(1)[0]

    # it grows on from the compacted snapshot, and an image added before stays one row
    rng = np.random.default_rng(12)
    with LiveIndex.open(folder, writable=True) as live:
        again = live.add_images(new_images([3, 40], "7"), unit_rows(rng, 2, 8))
        assert [a.new for a in again] == [False, True] and again[0].name == added[3]
        assert live.compact() == 1
    with LiveIndex.open(folder) as reopened:
        assert len(reopened) == 67 and reopened.stats()["added"] == 7
        assert reopened.index.names == names(60) + added + [again[1].name]
    assert json.loads((folder / "manifest.json").read_text())["generation"] == 2
    assert not (folder / "names.g1.json").exists()


def test_a_crash_while_compacting_loses_nothing(tmp_path, monkeypatch):
    folder, x, added = build(tmp_path, "flat")
    expected = names(60) + added

    # a crash before the new manifest is in place: the old snapshot and the journal load
    real_replace = snapshot_module.os.replace

    def crash_on_manifest(src, dst):
        if str(dst).endswith("manifest.json"):
            raise OSError("power cut")
        real_replace(src, dst)

    monkeypatch.setattr(snapshot_module.os, "replace", crash_on_manifest)
    with LiveIndex.open(folder, writable=True) as live, pytest.raises(OSError, match="power"):
        live.compact()
    monkeypatch.undo()
    with LiveIndex.open(folder) as reopened:
        assert reopened.index.names == expected and reopened.base_size == 60
    assert (folder / "names.g1.json").exists()  # an orphan of the failed attempt

    # a crash after the commit, before the journal is emptied: its records are not doubled
    def crash(self):
        raise OSError("power cut")

    monkeypatch.setattr(Journal, "reset", crash)
    with LiveIndex.open(folder, writable=True) as live, pytest.raises(OSError, match="power"):
        live.compact()
    monkeypatch.undo()
    assert len(Journal(folder, 8).replay()) == 1  # still there ...
    with LiveIndex.open(folder, writable=True) as reopened:  # ... and skipped
        assert reopened.index.names == expected and reopened.base_size == 66
        assert reopened.camera_of(added[0]) == "7"
        np.testing.assert_array_equal(reopened.vector_of(added[5]), x[65])
        assert reopened.compact() == 0
    assert (folder / JOURNAL).read_bytes() == MAGIC


def test_cli_index_compact(tmp_path, capsys):
    folder, _, _ = build(tmp_path, "hnsw")
    with LiveIndex.open(folder, writable=True):  # a running server holds the index
        assert main(["index", "compact", str(folder)]) == 1
        assert "another process is writing" in capsys.readouterr().err
    assert main(["index", "compact", str(folder)]) == 0
    out = capsys.readouterr().out
    assert "6 added images folded into the snapshot (generation 1, 66 images)" in out
    assert main(["index", "compact", str(folder)]) == 0
    assert "nothing to compact (66 images" in capsys.readouterr().out


def test_a_manifest_names_only_files_of_its_folder(tmp_path):
    folder, _, _ = build(tmp_path, "flat")
    manifest = json.loads((folder / "manifest.json").read_text())
    for bad in ["../names.json", "/etc/passwd", ".hidden", "sub/names.json", 3]:
        manifest["files"]["names"] = bad
        (folder / "manifest.json").write_text(json.dumps(manifest))
        with pytest.raises(GalleryIndexError, match="names a file"):
            GalleryIndex.load(folder)
    manifest["files"]["names"] = "names.json"
    manifest.update(gallery_rows=58, added_cameras=["1"])  # 59 rows of 60 accounted for
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(GalleryIndexError, match="do not fit its 60 images"):
        LiveIndex.open(folder)
