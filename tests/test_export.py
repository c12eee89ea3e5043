"""ONNX export: onnxruntime on real images gives PyTorch's features; metadata; CLI; errors."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from cacl.cli import main
from cacl.inference import ExportError, FeatureExtractor, export_onnx
from conftest import write_image
from model_factory import save_random_checkpoint

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

HEIGHT, WIDTH = 64, 32
TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    sizes = [(128, 64), (50, 30), (16, 8)]
    return [str(write_image(folder / f"{i}.jpg", seed=i, size=sizes[i])) for i in range(3)]


@pytest.mark.parametrize("backbone", ["resnet18", "efficientnet_lite0"])
def test_onnxruntime_features_match_pytorch_on_images(backbone, images, tmp_path):
    checkpoint = save_random_checkpoint(tmp_path / "best.pt", backbone, HEIGHT, WIDTH)
    result = export_onnx(checkpoint, tmp_path / "model.onnx")
    assert result.path.is_file() and result.max_abs_diff is not None
    assert result.max_abs_diff < TOLERANCE
    assert not list(tmp_path.glob(".model.onnx.*"))  # no temporary file left behind

    extractor = FeatureExtractor(checkpoint, device="cpu")
    session = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    (inp,), (out,) = session.get_inputs(), session.get_outputs()
    assert (inp.name, out.name) == ("images", "features")
    assert inp.shape[1:] == [3, HEIGHT, WIDTH] and isinstance(inp.shape[0], str)  # dynamic batch
    for batch in (images[:1], images):  # batch sizes 1 and 3
        expected = extractor(batch).numpy()
        got = session.run(None, {"images": extractor.preprocess(batch).numpy()})[0]
        assert got.shape == expected.shape == (len(batch), extractor.feature_dim)
        diff = float(np.abs(got - expected).max())
        assert diff < TOLERANCE, f"{backbone}, batch {len(batch)}: max abs difference {diff:.3g}"
        print(f"{backbone} batch {len(batch)}: max abs difference {diff:.3g}")


def test_metadata_documents_the_transform(tmp_path):
    checkpoint = save_random_checkpoint(tmp_path / "best.pt", "resnet18", HEIGHT, WIDTH)
    export_onnx(tmp_path, tmp_path / "m.onnx", check=False)  # a run folder works too
    meta = {p.key: p.value for p in onnx.load(tmp_path / "m.onnx").metadata_props}
    assert meta["cacl.resize"] == f"{HEIGHT}x{WIDTH} bicubic"
    assert meta["cacl.mean"] == "0.485,0.456,0.406" and meta["cacl.std"] == "0.229,0.224,0.225"
    assert meta["cacl.color_order"] == "RGB" and meta["cacl.layout"] == "NCHW"
    assert f"[batch, 3, {HEIGHT}, {WIDTH}]" in meta["cacl.input"]
    assert meta["cacl.feature_dim"] == "512" and meta["cacl.checkpoint"] == str(checkpoint)
    assert meta["cacl.input_norm"] == "auto"
    import os
    import stat

    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE((tmp_path / "m.onnx").stat().st_mode) == 0o666 & ~umask  # not 0600


def test_cli_export_and_its_errors(tmp_path, capsys, monkeypatch):
    save_random_checkpoint(tmp_path / "run" / "best.pt", "resnet18", HEIGHT, WIDTH)
    out = tmp_path / "deploy" / "reid.onnx"
    assert main(["export", str(tmp_path / "run"), "--onnx", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"[batch, 3, {HEIGHT}, {WIDTH}]" in printed and "max abs difference" in printed
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    features = session.run(None, {"images": np.zeros((5, 3, HEIGHT, WIDTH), np.float32)})[0]
    assert features.shape == (5, 512)
    assert main(["export", str(tmp_path / "missing"), "--onnx", str(out)]) == 1
    assert "checkpoint not found" in capsys.readouterr().err

    monkeypatch.setitem(sys.modules, "onnx", None)  # as if onnx were not installed
    assert main(["export", str(tmp_path / "run"), "--onnx", str(tmp_path / "x.onnx")]) == 1
    assert "pip install 'cacl[export]'" in capsys.readouterr().err
    assert not (tmp_path / "x.onnx").exists()


def test_a_network_in_memory_needs_its_size(tmp_path):
    with pytest.raises(ExportError, match="height and width"):
        export_onnx(torch.nn.Identity(), tmp_path / "m.onnx")
