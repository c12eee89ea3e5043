"""A growing index: GalleryIndex.add, the journal, LiveIndex (durable, atomic adds), `cacl index add`."""

from __future__ import annotations

import io
import json
import threading

import numpy as np
import pytest
from PIL import Image

from cacl.cli import main
from cacl.inference import GalleryIndex, GalleryIndexError
from cacl.inference import journal as journal_module
from cacl.inference.cameras import gallery_cameras
from cacl.inference.journal import JOURNAL, Journal, JournalError, Record
from cacl.inference.live import LiveIndex, NewImage, added_name
from conftest import write_image
from model_factory import save_random_checkpoint

faiss = pytest.importorskip("faiss")


def unit_rows(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.standard_normal((n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def names(n: int, start: int = 0) -> list[str]:
    return [f"{i:04d}_c{i % 3 + 1}s1_{i:06d}_00.jpg" for i in range(start, start + n)]


def jpeg(seed: int, size: tuple[int, int] = (16, 8)) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "JPEG")
    return out.getvalue()


def new_images(seeds: list[int], camera: str | None = None) -> list[NewImage]:
    return [NewImage(jpeg(s), f"p{s:03d}_c9s1_x.jpg", ".jpg", camera) for s in seeds]


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivf"])
def test_add_equals_building_everything_at_once(kind):
    rng = np.random.default_rng(0)
    x, q = unit_rows(rng, 1200, 16), unit_rows(rng, 20, 16)
    grown = GalleryIndex.build(x[:800], names(800), kind=kind)
    grown.add(x[800:1000], names(200, 800))
    grown.add(x[1000:], names(200, 1000))
    assert len(grown) == 1200 and grown.names == names(1200)
    np.testing.assert_array_equal(grown.vector(1100), x[1100])
    np.testing.assert_array_equal(grown.vector(3), x[3])
    if kind == "flat":
        whole = GalleryIndex.build(x, names(1200), kind="flat")
        for a, b in zip(grown.search(q, 10), whole.search(q, 10)):
            np.testing.assert_allclose(a, b, atol=1e-6)
    else:  # a new vector is found as its own nearest neighbour
        _, found = grown.search(x[1000:1050], 1)
        assert (found[:, 0] == np.arange(1000, 1050)).mean() >= 0.95
    with pytest.raises(GalleryIndexError, match="dimensions"):
        grown.add(np.zeros((1, 8), np.float32), ["x"])
    with pytest.raises(GalleryIndexError, match="names"):
        grown.add(x[:2], ["x"])


def test_journal_replays_committed_records_and_drops_a_torn_tail(tmp_path):
    rng = np.random.default_rng(1)
    journal = Journal(tmp_path, 4)
    journal.open_writer()
    records = [Record([f"a{i}", f"b{i}"], ["1", None], unit_rows(rng, 2, 4)) for i in range(3)]
    for record in records:
        journal.append(record)
    journal.close()
    data = (tmp_path / JOURNAL).read_bytes()
    replayed = Journal(tmp_path, 4).replay()
    assert [r.names for r in replayed] == [r.names for r in records]
    assert replayed[1].cameras == ["1", None]
    np.testing.assert_array_equal(replayed[2].features, records[2].features)

    # every possible crash point inside the last record keeps the first two
    last = len(journal_module.encode(records[2]))
    for cut in range(len(data) - last, len(data), 7):
        (tmp_path / JOURNAL).write_bytes(data[:cut])
        assert [r.names for r in Journal(tmp_path, 4).replay()] == [["a0", "b0"], ["a1", "b1"]]
    # a flipped byte in the last record's payload: its checksum fails, it does not count
    broken = bytearray(data)
    broken[-3] ^= 0xFF
    (tmp_path / JOURNAL).write_bytes(bytes(broken))
    assert len(Journal(tmp_path, 4).replay()) == 2
    # the writer cuts the torn tail off before appending again
    (tmp_path / JOURNAL).write_bytes(data[:-5])
    writer = Journal(tmp_path, 4)
    writer.open_writer()
    writer.append(Record(["c"], ["2"], unit_rows(rng, 1, 4)))
    with pytest.raises(JournalError, match="another process is writing"):
        Journal(tmp_path, 4).open_writer()
    writer.close()
    assert [r.names for r in Journal(tmp_path, 4).replay()] == [
        ["a0", "b0"],
        ["a1", "b1"],
        ["c"],
    ]
    (tmp_path / JOURNAL).write_bytes(b"something else entirely")
    with pytest.raises(JournalError, match="not a cacl index journal"):
        Journal(tmp_path, 4).replay()


@pytest.fixture
def snapshot(tmp_path):
    """An index folder of 60 random features whose names carry cameras 1-3."""
    rng = np.random.default_rng(2)
    x = unit_rows(rng, 60, 8)
    folder = tmp_path / "idx"
    root = tmp_path / "gallery"
    root.mkdir()
    for name in names(3):
        (root / name).write_bytes(jpeg(0))
    GalleryIndex.build(x, names(60), kind="flat", info={"root": str(root)}).save(folder)
    return folder, x


def test_live_index_adds_durably_and_reopens_with_them(snapshot):
    folder, x = snapshot
    rng = np.random.default_rng(3)
    extra = unit_rows(rng, 4, 8)
    with LiveIndex.open(folder, writable=True) as live:
        assert live.stats()["cameras"] == {"1": 20, "2": 20, "3": 20}
        done = live.add_images(new_images([1, 2, 3], camera="7") + new_images([4]), extra)
        assert [a.new for a in done] == [True] * 4
        assert [a.camera for a in done] == ["7", "7", "7", "9"]  # request, else the name
        again = live.add_images(new_images([2]), extra[1:2])  # the same bytes: the same row
        assert again[0].name == done[1].name and not again[0].new and again[0].camera == "7"
        assert len(live) == 64
        hits = live.search(extra[2], 3)
        assert hits[0].name == done[2].name and hits[0].distance < 1e-6
    assert done[0].name.startswith("added/p001_c9s1_x-") and done[0].name.endswith(".jpg")

    reopened = LiveIndex.open(folder)  # read-only: sees the adds, cannot add
    assert len(reopened) == 64 and reopened.stats()["added"] == 4
    assert reopened.camera_of(done[3].name) == "9"
    assert reopened.file_of(done[0].name).read_bytes() == new_images([1])[0].data
    assert reopened.file_of(names(1)[0]) == folder.parent / "gallery" / names(1)[0]
    np.testing.assert_array_equal(reopened.vector_of(done[1].name), extra[1])
    with pytest.raises(GalleryIndexError, match="read-only"):
        reopened.add_images(new_images([9]), extra[:1])
    # only indexed names map to files: no traversal, no unindexed file of the folder
    for name in [
        "../idx/manifest.json",
        "manifest.json",
        "added/../manifest.json",
        "/etc/passwd",
        "added",
        "",
        names(1)[0] + "/..",
        names(4)[3],
    ]:  # noqa: E501
        assert reopened.file_of(name) is None, name
    assert GalleryIndex.load(folder).names == names(60)  # the snapshot itself is unchanged
    assert json.loads((folder / "manifest.json").read_text())["count"] == 60


def test_search_filters_by_camera_and_leaves_the_query_out(snapshot):
    folder, x = snapshot
    live = LiveIndex.open(folder)
    cameras = np.array(gallery_cameras(names(60)))
    dist = ((x - x[5]) ** 2).sum(1)
    order = [int(i) for i in np.argsort(dist, kind="stable")]

    def expect(keep):
        return [names(60)[i] for i in order if keep(i)]

    got = [h.name for h in live.search(x[5], 7, exclude_name=names(60)[5])]
    assert got == expect(lambda i: i != 5)[:7]
    got = live.search(x[5], 30, exclude_camera=cameras[5])
    assert [h.name for h in got] == expect(lambda i: cameras[i] != cameras[5])[:30]
    assert len(got) == 30 and {h.camera for h in got} == {"1", "2", "3"} - {cameras[5]}
    got = live.search(x[5], 50, camera="2")  # more than camera 2 has: all of them
    assert [h.name for h in got] == expect(lambda i: cameras[i] == "2")
    assert [h.distance for h in got] == sorted(h.distance for h in got)


def test_a_crash_during_an_add_keeps_everything_acknowledged(snapshot, monkeypatch):
    folder, _ = snapshot
    rng = np.random.default_rng(4)
    live = LiveIndex.open(folder, writable=True)
    first = live.add_images(new_images([1, 2]), unit_rows(rng, 2, 8))
    real_write = journal_module.os.write

    def torn_write(fd, data):  # half the record reaches the disk, then the "crash"
        real_write(fd, bytes(data[: len(data) // 2]))
        raise OSError("power cut")

    monkeypatch.setattr(journal_module.os, "write", torn_write)
    with pytest.raises(JournalError, match="power cut"):
        live.add_images(new_images([3, 4]), unit_rows(rng, 2, 8))
    monkeypatch.undo()
    assert len(live) == 62  # the failed add is not visible ...
    live.close()
    # ... and after a real crash with the torn bytes still on disk, neither
    with open(folder / JOURNAL, "ab") as handle:
        handle.write(journal_module.encode(Record(["z"], [None], unit_rows(rng, 1, 8)))[:-3])
    reopened = LiveIndex.open(folder, writable=True)
    assert len(reopened) == 62 and all(a.name in reopened for a in first)
    reopened.add_images(new_images([5]), unit_rows(rng, 1, 8))  # and it grows on from there
    reopened.close()
    assert len(LiveIndex.open(folder)) == 63


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_concurrent_searches_see_a_batch_whole_or_not_at_all(tmp_path, kind):
    rng = np.random.default_rng(5)
    GalleryIndex.build(unit_rows(rng, 300, 16), names(300), kind=kind).save(tmp_path / "idx")
    live = LiveIndex.open(tmp_path / "idx", writable=True)
    batch, batches = 6, 25
    probes = unit_rows(rng, batches, 16)
    seen_sizes: list[int] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def search():
        try:
            while not stop.is_set():
                b = int(rng.integers(0, batches))
                hits = live.search(probes[b], batch)
                exact = sum(h.distance < 1e-6 for h in hits)
                assert exact in (0, batch), f"saw {exact} of the {batch} rows of batch {b}"
                seen_sizes.append(len(live))
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=search) for _ in range(3)]
    for thread in threads:
        thread.start()
    for b in range(batches):
        seeds = list(range(1000 + b * batch, 1000 + (b + 1) * batch))
        live.add_images(new_images(seeds), np.repeat(probes[b : b + 1], batch, 0))
    stop.set()
    for thread in threads:
        thread.join()
    assert not errors, errors[0]
    assert len(live) == 300 + batch * batches and seen_sizes
    assert all((s - 300) % batch == 0 for s in seen_sizes)
    live.close()


def test_cli_index_add(tmp_path, capsys):
    checkpoint = save_random_checkpoint(tmp_path / "best.pt", "resnet18", 32, 16)
    gallery, new = tmp_path / "gallery", tmp_path / "new"
    for i in range(6):
        write_image(gallery / f"{i:04d}_c{i % 2 + 1}s1_000000_00.jpg", seed=i, size=(40, 20))
    for i in range(3):
        write_image(new / "sub" / f"{i + 10:04d}_c5s1_000000_00.jpg", seed=10 + i, size=(40, 20))
    (new / "broken.jpg").write_bytes(b"garbage")
    out = tmp_path / "idx"
    assert main(["index", "build", str(checkpoint), str(gallery), str(out), "--device", "cpu"]) == 0
    capsys.readouterr()
    assert main(["index", "add", str(out), str(new), "--device", "cpu", "--chunk", "2"]) == 0
    printed = capsys.readouterr().out
    assert "added 3 images" in printed and "9 in all" in printed and "broken.jpg" in printed
    assert main(["index", "add", str(out), str(new), "--device", "cpu"]) == 0
    assert "added 0 images" in capsys.readouterr().out  # the same bytes: nothing new

    query = new / "sub" / "0011_c5s1_000000_00.jpg"
    assert main(["index", "search", str(out), str(query), "--top", "2", "--json"]) == 0
    hits = json.loads(capsys.readouterr().out)[0]["results"]
    assert hits[0]["name"] == added_name(NewImage(query.read_bytes(), query.name, ".jpg"))
    assert hits[0]["distance"] < 1e-5 and hits[0]["camera"] == "5"
    assert hits[0]["path"] == str(out.resolve() / hits[0]["name"])

    with LiveIndex.open(out, writable=True):  # a running server holds the index
        assert main(["index", "add", str(out), str(new), "--device", "cpu"]) == 1
        assert "another process is writing" in capsys.readouterr().err


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_reserve_makes_room_so_later_adds_copy_nothing(kind):
    rng = np.random.default_rng(6)
    x, q = unit_rows(rng, 300, 16), unit_rows(rng, 10, 16)

    def where(index: GalleryIndex) -> list[int]:  # the addresses of what an add would grow
        if kind == "flat":
            return [index._buffer.ctypes.data]
        storage = faiss.downcast_index(index._faiss.storage)
        return [int(storage.codes.data()), int(index._faiss.hnsw.neighbors.data())]

    plain = GalleryIndex.build(x[:200], names(200), kind=kind)
    roomy = GalleryIndex.build(x[:200], names(200), kind=kind)
    before = roomy.search(q, 8)
    assert roomy.reserve(100)
    for a, b in zip(roomy.search(q, 8), before):  # the same index, only with room
        np.testing.assert_array_equal(a, b)
    moved_plain, room = where(plain), where(roomy)
    for start in range(200, 300, 20):
        for index in (plain, roomy):
            index.add(x[start : start + 20], names(20, start))
    assert where(roomy) == room  # nothing was copied to grow
    assert where(plain) != moved_plain  # (without the room, it was)
    assert len(roomy) == 300 and roomy.names == names(300)
    np.testing.assert_array_equal(roomy.vector(250), x[250])
    if kind == "flat":
        for a, b in zip(roomy.search(q, 8), plain.search(q, 8)):
            np.testing.assert_array_equal(a, b)
    else:
        _, found = roomy.search(x[200:300], 1)
        assert (found[:, 0] == np.arange(200, 300)).mean() >= 0.95
