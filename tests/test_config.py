"""Typed config: YAML files, overrides, type conversion and errors that list valid keys."""

from __future__ import annotations

from pathlib import Path

import pytest

from cacl.config import ConfigError, config_from_dict, load_config, save_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"  # a link to src/cacl/configs


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_loads(path):
    cfg = load_config(path)
    assert cfg.train.batch_size % cfg.train.num_instances == 0


def test_authors_defaults_in_market_config():
    cfg = load_config(CONFIGS / "market1501.yaml")
    assert (cfg.data.name, cfg.model.backbone, cfg.train.epochs) == ("market1501", "resnet50", 80)
    assert (cfg.cluster.eps, cfg.cluster.k1, cfg.cluster.k2) == (0.6, 30, 6)
    assert cfg.optim.lr == pytest.approx(3.5e-4) and cfg.loss.gamma == 2.0


def test_overrides_convert_types():
    cfg = load_config(
        None,
        [
            "train.epochs=3",
            "model.gray_branch=false",
            "cluster.eps=0.5",
            "data.root=none",
            "optim.lr=1e-3",
            "model.pretrained=/w/r50.pth",
        ],
    )
    assert cfg.train.epochs == 3 and cfg.model.gray_branch is False
    assert cfg.cluster.eps == 0.5 and cfg.data.root is None and cfg.optim.lr == 1e-3
    assert cfg.model.pretrained == "/w/r50.pth"


def test_unknown_keys_list_the_valid_ones(tmp_path):
    with pytest.raises(ConfigError, match="valid keys of train: epochs, iters"):
        load_config(None, ["train.epoch=3"])
    with pytest.raises(ConfigError, match="SECTION one of data, model"):
        load_config(None, ["trian.epochs=3"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  backbone: resnet18\n  colour: red\n")
    with pytest.raises(ConfigError, match="unknown config key 'model.colour'"):
        load_config(bad)


def test_bad_values_are_errors():
    with pytest.raises(ConfigError, match="cannot read 'many' as int"):
        load_config(None, ["train.epochs=many"])
    with pytest.raises(ConfigError, match="cannot read 'maybe' as bool"):
        load_config(None, ["model.predictor=maybe"])
    with pytest.raises(ConfigError, match="multiple of train.num_instances"):
        load_config(None, ["train.batch_size=30"])
    with pytest.raises(ConfigError, match="must look like"):
        load_config(None, ["epochs"])
    with pytest.raises(ConfigError, match="config file not found"):
        load_config("/nonexistent.yaml")  # the message lists the shipped configs


def test_saved_config_round_trips(tmp_path):
    cfg = load_config(None, ["train.epochs=7", "cluster.refine=false"])
    save_config(cfg, tmp_path / "config.yaml")
    import yaml

    again = config_from_dict(yaml.safe_load((tmp_path / "config.yaml").read_text()))
    assert again == cfg


def test_shipped_config_by_name():
    assert load_config("market1501").data.name == "market1501"
    with pytest.raises(ConfigError, match="shipped configs: .*market1501"):
        load_config("nonexistent")


def test_train_momentum_is_now_memory_alpha_and_old_configs_still_load():
    from cacl.config import config_from_dict, load_config

    assert load_config("market1501").memory.alpha == 0.2
    assert load_config(None, ["train.momentum=0.3"]).memory.alpha == 0.3
    old = load_config("smoke").to_dict()
    old["train"]["momentum"] = old.pop("memory")["alpha"] + 0.1
    assert config_from_dict(old).memory.alpha == pytest.approx(0.3)


@pytest.mark.parametrize("name", ["market1501", "dukemtmcreid", "msmt17"])
def test_dataset_configs_keep_the_paper_pipeline_and_ship_a_camera_variant(name):
    from cacl.config import load_config

    paper, camera = load_config(name).to_dict(), load_config(f"{name}_camera").to_dict()
    assert paper["cluster"]["distance"] == "jaccard" and paper["cluster"]["camera_norm"] == "none"
    assert paper["loss"]["camera_weight"] == 0 and paper["cluster"]["source"] == "memory"
    assert camera["cluster"]["distance"] == "ca_jaccard" and camera["loss"]["camera_weight"] == 0.5
    changed = {
        f"{section}.{key}"
        for section in paper
        for key in paper[section]
        if paper[section][key] != camera[section][key]
    }
    assert changed <= {"cluster.eps", "cluster.distance", "cluster.source", "loss.camera_weight"}
