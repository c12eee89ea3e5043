"""A ViT through the whole pipeline: the ViT recipes' optimiser settings, the smoke config from
random initialisation and from a local timm file (its SHA-256 recorded), the extractor and the
ONNX export of the run checked with onnxruntime."""

from __future__ import annotations

import json

import numpy as np
import pytest
import timm
import torch
import yaml

from cacl.cli import main
from cacl.config import OptimConfig, load_config
from cacl.engine.optim import build_optimizer, lr_factor, param_groups
from cacl.models import CACLNet
from cacl.models.weights import file_sha256

VIT = "vit_small_patch16_224"


def test_warmup_then_steps():
    cfg = OptimConfig(warmup_epochs=4, warmup_factor=0.01, step_size=20, lr_gamma=0.1)
    factors = [lr_factor(e, cfg) for e in range(45)]
    assert factors[0] == pytest.approx(0.01)
    assert factors[2] == pytest.approx(0.01 + 0.99 * 2 / 4)
    assert factors[4:20] == [1.0] * 16
    assert factors[20] == pytest.approx(0.1) and factors[40] == pytest.approx(0.01)
    assert all(a <= b for a, b in zip(factors[:5], factors[1:5]))


def test_weight_decay_exemptions_of_the_vit_recipes():
    net = CACLNet(VIT, "none", gray_branch=False, image_size=(64, 32))
    named = dict(net.named_parameters())
    decay, exempt = param_groups(net, OptimConfig(decay_all=False, weight_decay=0.05))
    assert decay["weight_decay"] == 0.05 and exempt["weight_decay"] == 0.0
    exempt_ids = {id(p) for p in exempt["params"]}
    for name in ("pos_embed", "cls_token", "norm.weight", "blocks.0.attn.qkv.bias"):
        param = next(p for n, p in named.items() if n.endswith(name))
        assert id(param) in exempt_ids, name
    qkv = next(p for n, p in named.items() if n.endswith("blocks.0.attn.qkv.weight"))
    assert id(qkv) not in exempt_ids and id(qkv) in {id(p) for p in decay["params"]}
    frozen = net.branch1.neck.bias
    assert all(frozen is not p for g in (decay, exempt) for p in g["params"])
    (one,) = param_groups(net, OptimConfig())  # the paper: one group, decay everywhere
    assert len(one["params"]) == len(decay["params"]) + len(exempt["params"])


@pytest.mark.parametrize(
    "name,kind,scheduler",
    [("adam", torch.optim.Adam, "StepLR"), ("adamw", torch.optim.AdamW, "LambdaLR")],
)
def test_optimiser_choice(name, kind, scheduler):
    net = torch.nn.Linear(3, 2)
    warmup = 0 if scheduler == "StepLR" else 2
    optimizer, sched = build_optimizer(net, OptimConfig(name=name, warmup_epochs=warmup))
    assert type(optimizer) is kind and type(sched).__name__ == scheduler
    sgd, _ = build_optimizer(net, OptimConfig(name="sgd", momentum=0.8))
    assert type(sgd) is torch.optim.SGD and sgd.param_groups[0]["momentum"] == 0.8


def test_recipe_configs_load():
    for name, backbone in [
        ("market1501_vit_small", VIT),
        ("msmt17_vit_small", VIT),
        ("market1501_clip_vit_b16", "vit_base_patch16_clip_224.openai"),
        ("msmt17_clip_vit_b16", "vit_base_patch16_clip_224.openai"),
    ]:
        cfg = load_config(name)
        assert cfg.model.backbone == backbone and cfg.optim.name == "sgd"
        assert (cfg.train.batch_size, cfg.train.iters) == (256, 200)
    assert load_config("msmt17_vit_small").cluster.eps == 0.7
    assert load_config("market1501_clip_vit_b16").optim.warmup_epochs == 10


@pytest.fixture(scope="module")
def vit_run(tmp_path_factory, cache):
    """The smoke config with a ViT-S/16 from a local timm file (random weights), 64 x 32."""
    root = tmp_path_factory.mktemp("vit")
    torch.manual_seed(0)
    weights = root / "vit_s16.safetensors"
    from safetensors.torch import save_file

    model = timm.create_model(VIT, pretrained=False)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    run = root / "run"
    args = ["train", "--no-progress", "--config", "smoke", "--output", str(run)]
    args += [f"model.backbone={VIT}", f"model.pretrained={weights}", "model.patch_stride=12"]
    args += ["optim.name=adamw", "optim.warmup_epochs=1", "optim.decay_all=false"]
    assert main(args) == 0
    return run, weights


def test_vit_smoke_run_records_its_weights(vit_run):
    run, weights = vit_run
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["model"]["pretrained_sha256"] == file_sha256(weights)
    results = json.loads((run / "results.json").read_text())
    assert 0.0 <= results["mAP"] <= 1.0
    from cacl.checkpoints.network import load_network

    net, cfg, _ = load_network(run)
    assert net.branch1.backbone.model.patch_embed.grid_size == (5, 2)  # 64x32, stride 12
    assert net.interpolation == "bicubic" and net.feat_dim == 384


def test_vit_from_random_initialisation_trains(tmp_path, cache):
    run = tmp_path / "run"
    args = ["train", "--no-progress", "--config", "smoke", "--output", str(run)]
    assert main([*args, f"model.backbone={VIT}", "model.pretrained=none", "train.epochs=1"]) == 0
    assert json.loads((run / "results.json").read_text())["best_epoch"] == 1


def test_onnx_export_of_a_vit_run(vit_run, tmp_path, image_writer):
    ort = pytest.importorskip("onnxruntime")
    from cacl.inference import FeatureExtractor, export_onnx

    run, _ = vit_run
    result = export_onnx(run, tmp_path / "vit.onnx")
    assert result.max_abs_diff is not None and result.max_abs_diff < 1e-4
    extractor = FeatureExtractor(run, device="cpu")
    images = [str(image_writer(tmp_path / f"{i}.jpg", seed=i, size=(40, 20))) for i in range(2)]
    session = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"images": extractor.preprocess(images).numpy()})[0]
    np.testing.assert_allclose(got, extractor(images).numpy(), atol=1e-4)
    import onnx

    meta = {p.key: p.value for p in onnx.load(str(result.path)).metadata_props}
    assert meta["cacl.backbone"] == VIT and meta["cacl.backbone_mean"] == "0.5,0.5,0.5"
    assert meta["cacl.resize"] == "64x32 bicubic" and len(meta["cacl.pretrained_sha256"]) == 64
