"""One image reader, one policy for unreadable files, one extraction loop."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from PIL import Image

from cacl.data.image_dataset import ImageDataset, TwoViewDataset
from cacl.data.images import read_rgb
from cacl.data.types import Sample
from cacl.errors import DatasetError
from cacl.evaluation.extract import extract_batches, extract_features


def to_tensor(image: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.array(image.resize((8, 16)), dtype=np.float32)).permute(2, 0, 1)


@pytest.fixture
def files(tmp_path):
    good = []
    for i in range(5):
        path = tmp_path / f"{i}.png"
        Image.new("RGB", (8, 16), (40 * i, 10, 200)).save(path)
        good.append(str(path))
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    return good, str(bad)


def test_read_rgb_names_the_file(files) -> None:
    good, bad = files
    assert read_rgb(good[0]).mode == "RGB"
    with pytest.raises(DatasetError, match="bad.jpg"):
        read_rgb(bad)


def test_blank_policy_gives_a_black_image_and_warns_once(files, caplog) -> None:
    good, bad = files
    samples = [Sample(good[0], 0, 0), Sample(bad, 1, 0), Sample(bad, 1, 0)]
    dataset = ImageDataset(samples, to_tensor)
    with caplog.at_level(logging.WARNING, logger="cacl.data"):
        items = [dataset[i] for i in range(3)]
    assert [reason for _, _, reason in items] == ["", "", ""]
    assert items[0][0].sum() > 0 and items[1][0].sum() == 0
    assert sum("bad.jpg" in r.getMessage() for r in caplog.records) == 1
    views = TwoViewDataset([Sample(bad, 1, 0)], to_tensor, to_tensor)
    assert views[0]["colour"].sum() == 0 and views[0]["gray"].sum() == 0


def test_report_policy_and_the_loop_keep_order_and_list_failures(files) -> None:
    good, bad = files
    items = [good[0], bad, good[1], good[2], bad, good[3]]
    dataset = ImageDataset(items, to_tensor, read=read_rgb, on_error="report")
    mean = lambda batch: batch.mean(dim=(2, 3))  # noqa: E731
    features, errors = extract_batches(mean, dataset, batch_size=2, progress=False)
    assert [i for i, _ in errors] == [1, 4] and all("bad.jpg" in r for _, r in errors)
    expected = torch.stack([to_tensor(read_rgb(p)).mean(dim=(1, 2)) for p in items if p != bad])
    torch.testing.assert_close(features, expected)
    first, errors = extract_batches(mean, dataset, batch_size=2, progress=False, stop_on_error=True)
    assert errors == [(1, errors[0][1])] and first is None


def test_extract_features_matches_a_plain_loop(files) -> None:
    good, _ = files
    samples = [Sample(p, i, 0) for i, p in enumerate(good)]
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()
    ).eval()
    features = extract_features(net, samples, to_tensor, batch_size=2, progress=False)
    with torch.no_grad():
        expected = torch.cat([net(to_tensor(read_rgb(s.path))[None]) for s in samples])
    torch.testing.assert_close(features, expected)
