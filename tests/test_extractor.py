"""FeatureExtractor: the evaluation's features for paths, PIL images and arrays; clear errors."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from cacl.checkpoints.network import load_network
from cacl.data.transforms import test_transform
from cacl.data.types import Sample
from cacl.evaluation.extract import extract_features
from cacl.inference import FeatureExtractor, ImageInputError
from conftest import write_image
from model_factory import save_random_checkpoint

HEIGHT, WIDTH = 32, 16


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("run")
    save_random_checkpoint(folder / "best.pt", "resnet18", HEIGHT, WIDTH)
    return folder


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    sizes = [(16, 8), (40, 20), (64, 30), (20, 20), (128, 64)]
    paths = [
        write_image(folder / f"{i}.{'png' if i % 2 else 'jpg'}", seed=i, size=sizes[i % 5])
        for i in range(7)
    ]
    return [str(p) for p in paths]


@pytest.fixture(scope="module")
def extractor(run_dir):
    return FeatureExtractor(run_dir, device="cpu", batch_size=4)


def test_features_equal_the_evaluation_path(run_dir, images, extractor):
    net, cfg, _ = load_network(run_dir, "cpu")
    samples = [Sample(p, 0, 0) for p in images]
    transform = test_transform(cfg.data.height, cfg.data.width)
    expected = extract_features(net, samples, transform, batch_size=4, progress=False)
    got = extractor(images)
    assert got.dtype == torch.float32 and got.shape == (len(images), 512)
    assert torch.allclose(got, expected, atol=1e-6), (got - expected).abs().max()
    assert torch.allclose(got.norm(dim=1), torch.ones(len(images)), atol=1e-5)
    assert not torch.allclose(got[0], got[1])  # different images, different features
    # a checkpoint file works like its run folder; the batch size does not change the result
    one_by_one = FeatureExtractor(run_dir / "best.pt", device="cpu", batch_size=1)(images)
    assert torch.allclose(one_by_one, expected, atol=1e-5)


def test_pil_images_arrays_and_mixed_lists(images, extractor):
    expected = extractor(images[:3])
    pil = [Image.open(p).convert("RGB") for p in images[:3]]
    arrays = [np.asarray(img) for img in pil]
    assert torch.allclose(extractor(pil), expected, atol=1e-6)
    assert torch.allclose(extractor(arrays), expected, atol=1e-6)
    mixed = extractor([images[0], pil[1], arrays[2]])
    assert torch.allclose(mixed, expected, atol=1e-6)
    single = extractor(images[1])
    assert single.shape == (1, 512) and torch.allclose(single[0], expected[1], atol=1e-6)
    assert torch.allclose(extractor(arrays[2])[0], expected[2], atol=1e-6)
    gray = Image.open(images[0]).convert("L")  # any PIL mode is converted to RGB first
    assert torch.allclose(extractor(gray), extractor(gray.convert("RGB")), atol=1e-6)
    stacked = np.stack([np.zeros((10, 6, 3), np.uint8), np.full((10, 6, 3), 200, np.uint8)])
    assert extractor(stacked).shape == (2, 512)
    assert extractor([]).shape == (0, 512)


def test_preprocess_is_the_batch_the_network_takes(images, extractor):
    batch = extractor.preprocess(images[:3])
    transform = test_transform(HEIGHT, WIDTH)
    expected = torch.stack([transform(Image.open(p).convert("RGB")) for p in images[:3]])
    assert batch.dtype == torch.float32 and batch.shape == (3, 3, HEIGHT, WIDTH)
    assert torch.equal(batch, expected)
    with torch.no_grad():
        assert torch.allclose(extractor.network(batch), extractor(images[:3]), atol=1e-6)


def test_clear_errors_name_the_problem(tmp_path, images, extractor):
    missing = tmp_path / "nope.jpg"
    with pytest.raises(ImageInputError, match="image not found: .*nope.jpg"):
        extractor([images[0], missing])
    with pytest.raises(ImageInputError, match="is a folder"):
        extractor(tmp_path)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image at all")
    with pytest.raises(ImageInputError, match="cannot read image .*broken.jpg"):
        extractor([images[0], str(broken)])
    with pytest.raises(ImageInputError, match="uint8"):
        extractor(np.zeros((8, 4, 3), np.float32))
    with pytest.raises(ImageInputError, match=r"shape \(height, width, 3\).*\(8, 4\)"):
        extractor([np.zeros((8, 4), np.uint8)])
    with pytest.raises(ImageInputError, match=r"\(8, 4, 4\)"):
        extractor(np.zeros((8, 4, 4), np.uint8))
    with pytest.raises(ImageInputError, match="got int"):
        extractor([images[0], 3])


def test_extract_files_leaves_out_unreadable_files(tmp_path, images, extractor):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG truncated")
    result = extractor.extract_files([images[0], broken, images[1]])
    assert result.paths == [images[0], images[1]]
    assert [p for p, _ in result.failed] == [str(broken)]
    assert torch.allclose(result.features, extractor(images[:2]), atol=1e-6)


def test_progress_bar_and_worker_processes(images, run_dir, capsys):
    extractor = FeatureExtractor(run_dir, device="cpu", batch_size=2, workers=2)
    with_workers = extractor(images, progress=True)
    assert "features" in capsys.readouterr().err  # tqdm wrote its bar
    serial = FeatureExtractor(run_dir, device="cpu", batch_size=2)(images, progress=False)
    assert capsys.readouterr().err == ""
    assert torch.allclose(with_workers, serial, atol=1e-6)


def test_import_cacl_stays_light():
    code = (
        "import sys, cacl; assert 'torch' not in sys.modules, 'torch imported'; "
        "assert cacl.FeatureExtractor.__name__ == 'FeatureExtractor'; "
        "assert 'torch' in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
