"""Hand-crafted baselines: feature shapes and normalisation, and ``cacl baseline`` end to end."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from cacl.baselines import (
    colorhist_array,
    colorhist_features,
    evaluate_features,
    graygrad_array,
    graygrad_features,
)
from cacl.cli import main
from cacl.data import load_dataset
from cacl.data.synth import generate
from cacl.evaluation import evaluate_rank


def test_colorhist_shape_and_normalisation():
    rng = np.random.default_rng(0)
    hsv = rng.integers(0, 256, size=(3, 16, 8, 3), dtype=np.uint8)
    f = colorhist_array(hsv, bins=(8, 4, 4), stripes=4)
    assert f.shape == (3, 4 * 128) and f.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(f, axis=1), 1.0, rtol=1e-5)
    # Square-rooted L1-normalised stripes: every stripe has the same weight.
    np.testing.assert_allclose((f.reshape(3, 4, 128) ** 2).sum(axis=2), 0.25, rtol=1e-5)
    # A uniform image puts all its mass in one bin per stripe.
    flat = np.full((1, 16, 8, 3), 200, dtype=np.uint8)
    assert np.count_nonzero(colorhist_array(flat, stripes=2)) == 2


def test_graygrad_shape_normalisation_and_orientation():
    rng = np.random.default_rng(0)
    gray = rng.integers(0, 256, size=(2, 32, 16), dtype=np.uint8)
    f = graygrad_array(gray, cells=(4, 2), bins=9)
    assert f.shape == (2, 4 * 2 * 9) and f.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(f, axis=1), 1.0, rtol=1e-5)
    # Vertical stripes have horizontal gradients: orientation 0, split between bins 0 and 8.
    stripes = np.zeros((1, 32, 16), dtype=np.uint8)
    stripes[:, :, ::4] = 255
    h = graygrad_array(stripes, cells=(1, 1), bins=9)[0]
    assert set(np.flatnonzero(h > 1e-3)) <= {0, 8}
    assert graygrad_array(np.zeros((1, 8, 8), np.uint8), cells=(1, 1)).sum() == 0.0


def test_features_from_paths(tmp_path):
    rng = np.random.default_rng(1)
    paths = []
    for i in range(3):
        pixels = rng.integers(0, 256, size=(128, 64, 3), dtype=np.uint8)
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(pixels).save(paths[-1])
    big = tmp_path / "big.png"  # other sizes are resized to 128 x 64
    Image.fromarray(rng.integers(0, 256, size=(256, 128, 3), dtype=np.uint8)).save(big)
    c = colorhist_features([*paths, big], batch_size=2)
    g = graygrad_features([*paths, big], batch_size=2)
    assert c.shape == (4, 512) and g.shape == (4, 8 * 4 * 9)
    hsv = np.stack([np.asarray(Image.open(p).convert("HSV")) for p in paths])
    np.testing.assert_allclose(c[:3], colorhist_array(hsv), rtol=1e-6)
    with pytest.raises(ValueError):
        colorhist_features([])


def test_cli_baseline_on_tiny_synthetic_set(tmp_path, capsys):
    root = tmp_path / "tiny"
    generate(root, preset="tiny", seed=0, workers=1, progress=False)
    assert main(["baseline", "colorhist", str(root)]) == 0
    out = capsys.readouterr().out
    assert "colorhist: mAP" in out and "rank-1" in out
    value = float(out.split("mAP")[1].split()[0])
    dataset = load_dataset("market1501", root)
    colour = evaluate_features(dataset, colorhist_features)
    assert value == pytest.approx(colour["mAP"], abs=6e-4)  # the command prints this evaluation
    gray = evaluate_features(dataset, graygrad_features)
    # the set's premise: each camera casts its own colour, identity lives in shape and texture
    assert gray["mAP"] > 2 * colour["mAP"] and gray["rank1"] > colour["rank1"]
    qf = graygrad_features([s.path for s in dataset.query])
    gf = graygrad_features([s.path for s in dataset.gallery])
    distmat = np.array([[float(((q - g) ** 2).sum()) for g in gf] for q in qf])  # the slow way
    expected = evaluate_rank(
        distmat,
        np.array([s.pid for s in dataset.query]),
        np.array([s.pid for s in dataset.gallery]),
        np.array([s.camid for s in dataset.query]),
        np.array([s.camid for s in dataset.gallery]),
    )[1]
    assert gray["mAP"] == pytest.approx(expected, rel=1e-5)


def test_cli_untrained_backbone_baseline_equals_a_direct_evaluation(tmp_path, capsys):
    """`cacl baseline backbone NAME DATA` prints the mAP of the backbone's own features, image by
    image in its own convention (Lite0: (x - 0.5) / 0.5, last stride 1, mean-pooled): the input
    adapter, the resize and the pooling of the pipeline give the same ranking."""
    import timm
    import torch
    from torchvision import transforms as T

    from cacl.models.lite import packaged_weights_path, set_last_stride_one, to_timm_keys

    root = tmp_path / "tiny"
    generate(root, preset="tiny", seed=0, workers=1, progress=False)
    args = ["baseline", "backbone", "efficientnet_lite0", str(root), "--height", "64"]
    assert main([*args, "--width", "32", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "efficientnet_lite0 untrained" in out and "sha256" in out
    printed = float(out.split("mAP")[1].split()[0])

    model = timm.create_model("tf_efficientnet_lite0", num_classes=0)
    state = torch.load(packaged_weights_path("efficientnet_lite0"), weights_only=True)
    model.load_state_dict(
        {
            k: v
            for k, v in to_timm_keys(state, [len(s) for s in model.blocks]).items()
            if "classifier" not in k
        }
    )
    set_last_stride_one(model)
    model.eval()
    prep = T.Compose(
        [
            T.Resize((64, 32), interpolation=T.InterpolationMode.BICUBIC),
            T.ToTensor(),
            T.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
        ]
    )

    def features(paths):
        rows = []
        with torch.no_grad():
            for path in paths:
                image = prep(Image.open(path).convert("RGB"))[None]
                rows.append(
                    torch.nn.functional.normalize(model.forward_features(image).mean((2, 3)), dim=1)
                )
        return torch.cat(rows).numpy()

    expected = evaluate_features(load_dataset("market1501", root), features)
    assert printed == pytest.approx(expected["mAP"], abs=1e-3)
    assert main(["baseline", "backbone", str(root)]) == 1  # NAME missing: a one-line error
