"""Dataset readers on small trees of real image files, including the awkward cases."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from cacl.cli import main
from cacl.data import load_dataset
from cacl.errors import DatasetError
from conftest import write_image


def make_market(base: Path, extra_train: tuple[str, ...] = ()) -> Path:
    names = {
        "bounding_box_train": [
            "0002_c1s1_000451_03.jpg",
            "0002_c2s1_000551_01.jpg",
            "0007_c3s1_000123_00.jpg",
            *extra_train,
        ],
        "query": ["0003_c1s1_000100_00.jpg", "0004_c6s2_000200_00.jpg"],
        "bounding_box_test": [
            "0003_c2s1_000300_00.jpg",
            "0004_c1s1_000400_00.jpg",
            "0000_c1s1_000500_00.jpg",  # distractor: kept
            "-1_c3s1_000600_00.jpg",  # junk: dropped
        ],
    }
    for i, (folder, files) in enumerate(names.items()):
        for j, name in enumerate(files):
            write_image(base / folder / name, seed=10 * i + j)
    (base / "bounding_box_train" / "Thumbs.db").write_bytes(b"not an image")
    (base / "query" / "readme.txt").write_text("ignored")
    return base


def test_market_reads_splits_with_protocol_rules(tmp_path):
    base = make_market(tmp_path / "Market-1501-v15.09.15")
    ds = load_dataset("market1501", base)
    assert sorted((Path(s.path).name, s.pid, s.camid) for s in ds.train) == [
        ("0002_c1s1_000451_03.jpg", 2, 0),
        ("0002_c2s1_000551_01.jpg", 2, 1),
        ("0007_c3s1_000123_00.jpg", 7, 2),
    ]
    assert {(s.pid, s.camid) for s in ds.query} == {(3, 0), (4, 5)}
    gallery_pids = sorted(s.pid for s in ds.gallery)
    assert gallery_pids == [0, 3, 4]  # distractor kept, junk dropped
    assert ds.num_train_pids == 2 and ds.num_train_cams == 3
    table = ds.summary()
    assert "train" in table and "gallery" in table
    assert "|     2 |        3 |         3" in table


def test_root_may_be_the_parent_folder(tmp_path):
    make_market(tmp_path / "Market-1501-v15.09.15")
    ds = load_dataset("market", tmp_path)
    assert ds.root == tmp_path / "Market-1501-v15.09.15"
    assert len(ds.train) == 3


def test_duke_names(tmp_path):
    base = tmp_path / "DukeMTMC-reID"
    write_image(base / "bounding_box_train" / "0001_c2_f0046182.jpg")
    write_image(base / "query" / "0005_c8_f0000001.jpg")
    write_image(base / "bounding_box_test" / "0005_c1_f0000002.jpg")
    ds = load_dataset("dukemtmcreid", tmp_path)
    assert ds.train[0][1:] == (1, 1)
    assert ds.query[0][1:] == (5, 7)


def test_missing_folder_names_what_was_expected(tmp_path):
    with pytest.raises(DatasetError, match="bounding_box_train.*looked in"):
        load_dataset("market1501", tmp_path)
    with pytest.raises(DatasetError, match="root folder not found"):
        load_dataset("market1501", tmp_path / "nope")


def test_empty_split_is_an_error(tmp_path):
    base = make_market(tmp_path / "m")
    for p in (base / "query").iterdir():
        p.unlink()
    with pytest.raises(DatasetError, match=r"no image files in .*query"):
        load_dataset("market1501", base)


def test_unparseable_name_is_an_error_naming_the_file(tmp_path):
    base = make_market(tmp_path / "m", extra_train=("holiday_photo.jpg",))
    with pytest.raises(DatasetError, match="holiday_photo.jpg does not match"):
        load_dataset("market1501", base)


def test_unknown_dataset_lists_known_names(tmp_path):
    with pytest.raises(DatasetError, match="unknown dataset 'cuhk99'.*market1501"):
        load_dataset("cuhk99", tmp_path)


def test_unreadable_images_are_reported_once_and_skipped(tmp_path, caplog):
    base = make_market(tmp_path / "m")
    (base / "bounding_box_train" / "0009_c1s1_000001_00.jpg").write_bytes(b"")
    (base / "bounding_box_train" / "0009_c2s1_000002_00.jpg").write_bytes(b"garbage" * 10)
    with caplog.at_level(logging.WARNING):
        ds = load_dataset("market1501", base)
    assert len(ds.train) == 3
    warnings = [r for r in caplog.records if "unreadable" in r.getMessage()]
    assert len(warnings) == 1
    message = warnings[0].getMessage()
    assert "skipping 2 unreadable train images of 5" in message
    assert "0009_c1s1_000001_00.jpg" in message


def test_full_verification_catches_truncated_pixels(tmp_path):
    base = make_market(tmp_path / "m")
    good = base / "bounding_box_train" / "0007_c3s1_000123_00.jpg"
    cut = base / "bounding_box_train" / "0008_c1s1_000001_00.jpg"
    write_image(cut, seed=3, size=(128, 64))
    data = cut.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    assert good.exists()
    assert len(load_dataset("market1501", base, verify="header").train) == 4
    assert len(load_dataset("market1501", base, verify="full").train) == 3


def test_split_of_only_unreadable_images_is_an_error(tmp_path):
    base = make_market(tmp_path / "m")
    for p in (base / "query").glob("*.jpg"):
        p.write_bytes(b"")
    with pytest.raises(DatasetError, match="no readable image in the query split"):
        load_dataset("market1501", base)


# ---------------------------------------------------------------- MSMT17


def write_msmt_lists(base: Path, train_dir: str, test_dir: str) -> None:
    entries = {
        "list_train.txt": (train_dir, ["0000/0000_000_01_0303morning_0015_0.jpg 0"]),
        "list_val.txt": (train_dir, ["0001/0001_005_15_0303noon_0100_1.jpg 1"]),
        "list_query.txt": (test_dir, ["0000/0000_000_03_0303morning_0015_0.jpg 0"]),
        "list_gallery.txt": (
            test_dir,
            ["0000/0000_001_02_0303morning_0016_0.jpg 0", "0001/0001_002_04_0303noon_0001_0.jpg 1"],
        ),
    }
    for i, (list_name, (folder, lines)) in enumerate(entries.items()):
        for j, line in enumerate(lines):
            write_image(base / folder / line.split()[0], seed=i * 10 + j)
        (base / list_name).write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize(
    "version,train_dir,test_dir",
    [("MSMT17_V1", "train", "test"), ("MSMT17_V2", "mask_train_v2", "mask_test_v2")],
)
def test_msmt17_list_form(tmp_path, version, train_dir, test_dir):
    write_msmt_lists(tmp_path / version, train_dir, test_dir)
    ds = load_dataset("msmt17", tmp_path)
    assert [(s.pid, s.camid) for s in ds.train] == [(0, 0), (1, 14)]  # list_train + list_val
    assert [(s.pid, s.camid) for s in ds.query] == [(0, 2)]
    assert [(s.pid, s.camid) for s in ds.gallery] == [(0, 1), (1, 3)]
    assert all(Path(s.path).exists() for s in ds.train + ds.query + ds.gallery)


def test_msmt17_repack_form(tmp_path):
    base = tmp_path / "MSMT17_V1"
    write_image(base / "bounding_box_train" / "0000_c1_0000.jpg")
    write_image(base / "query" / "0001_c3_0000.jpg")
    write_image(base / "bounding_box_test" / "0001_c15_0001.jpg")
    ds = load_dataset("msmt17", tmp_path)
    assert ds.gallery[0][1:] == (1, 14)


def test_msmt17_malformed_list_line(tmp_path):
    base = tmp_path / "MSMT17_V1"
    write_msmt_lists(base, "train", "test")
    (base / "list_val.txt").write_text("0001/0001_005_15_x.jpg\n")
    with pytest.raises(DatasetError, match=r"list_val.txt:1: expected 'relative/path.jpg pid'"):
        load_dataset("msmt17", tmp_path)


def test_msmt17_missing_images_point_at_the_folder(tmp_path):
    base = tmp_path / "MSMT17_V1"
    write_msmt_lists(base, "train", "test")
    for p in (base / "test").rglob("*.jpg"):
        p.unlink()
    with pytest.raises(DatasetError, match="listed images do not exist"):
        load_dataset("msmt17", tmp_path)


def test_msmt17_neither_form(tmp_path):
    (tmp_path / "MSMT17_V1").mkdir()
    with pytest.raises(DatasetError, match="list_train.txt"):
        load_dataset("msmt17", tmp_path)


# ---------------------------------------------------------------- folder


def test_folder_cameras_from_regex(tmp_path):
    for name in ("a_c3_1.jpg", "b_c10_2.png", "sub/c_c3_3.jpg"):
        write_image(tmp_path / name)
    ds = load_dataset("folder", tmp_path, camera="regex")
    cams = {Path(s.path).name: s.camid for s in ds.train}
    assert cams == {"a_c3_1.jpg": 0, "c_c3_3.jpg": 0, "b_c10_2.png": 1}  # numeric order
    assert {s.pid for s in ds.train} == {-1}
    assert not ds.has_test_split


def test_folder_cameras_from_subfolders_auto(tmp_path):
    for name in ("camA/1.jpg", "camA/deep/2.jpg", "camB/3.jpg"):
        write_image(tmp_path / name)
    ds = load_dataset("folder", tmp_path)  # auto: names have no _cN, images in 2 sub-folders
    cams = {Path(s.path).name: s.camid for s in ds.train}
    assert cams == {"1.jpg": 0, "2.jpg": 0, "3.jpg": 1}


def test_folder_single_camera_when_unknown(tmp_path):
    for name in ("x.jpg", "y.jpg"):
        write_image(tmp_path / name)
    ds = load_dataset("folder", tmp_path)
    assert [s.camid for s in ds.train] == [0, 0]


def test_folder_errors(tmp_path):
    with pytest.raises(DatasetError, match="no image files"):
        load_dataset("folder", tmp_path)
    write_image(tmp_path / "x.jpg")
    write_image(tmp_path / "cam1" / "y.jpg")
    with pytest.raises(DatasetError, match="does not match cam_regex"):
        load_dataset("folder", tmp_path, camera="regex")
    with pytest.raises(DatasetError, match="lie directly in"):
        load_dataset("folder", tmp_path, camera="subfolder")
    with pytest.raises(DatasetError, match="needs a group"):
        load_dataset("folder", tmp_path, camera="regex", cam_regex=r"_c\d+")


def test_cli_datasets_prints_summary(tmp_path, capsys):
    base = make_market(tmp_path / "m")
    assert main(["datasets", "market1501", str(base)]) == 0
    assert "query" in capsys.readouterr().out
    assert main(["datasets", "market1501", str(tmp_path / "missing")]) == 1
    assert "root folder not found" in capsys.readouterr().err
