"""Run folders are never reused by accident, errors are one line, files get normal modes."""

from __future__ import annotations

import json
import os
import stat

import pytest
import torch

from cacl.checkpoints.io import atomic_save
from cacl.checkpoints.run_dir import check_new_output, write_json_atomic
from cacl.cli import main
from cacl.config import ConfigError, load_config


def test_train_refuses_an_output_folder_that_holds_files(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "best.pt").write_bytes(b"keep me")
    assert main(["train", "--config", "smoke", "--output", str(run)]) == 1
    err = capsys.readouterr().err
    assert "--resume" in err and err.count("\n") == 1
    assert (run / "best.pt").read_bytes() == b"keep me"
    assert sorted(p.name for p in run.iterdir()) == ["best.pt"]  # nothing written


def test_output_must_be_a_folder(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(Exception, match="is a file"):
        check_new_output(afile)
    with pytest.raises(Exception, match="is under the file"):
        check_new_output(afile / "run")
    assert check_new_output(tmp_path / "new") == tmp_path / "new"  # missing: fine
    (tmp_path / "empty").mkdir()
    assert check_new_output(tmp_path / "empty") == tmp_path / "empty"


def test_results_json_is_strict_json(tmp_path):
    path = tmp_path / "results.json"
    write_json_atomic({"mAP": float("nan"), "history": [{"x": float("inf")}, 1.5]}, path)

    def refuse(name):
        raise ValueError(f"non-standard JSON constant {name}")

    data = json.loads(path.read_text(), parse_constant=refuse)
    assert data == {"mAP": None, "history": [{"x": None}, 1.5]}


def test_checkpoints_get_the_mode_of_a_normal_file(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_save({"a": torch.zeros(1)}, tmp_path / "last.pt")
        (tmp_path / "plain").write_text("x")
    finally:
        os.umask(old)
    mode = stat.S_IMODE((tmp_path / "last.pt").stat().st_mode)
    assert mode == stat.S_IMODE((tmp_path / "plain").stat().st_mode) == 0o644


def _command_raising(monkeypatch, exc):
    import cacl.cli.eps as eps

    def boom(args):
        raise exc

    monkeypatch.setattr(eps, "run", boom)


def test_ctrl_c_prints_one_line_and_exits_130(monkeypatch, capsys):
    _command_raising(monkeypatch, KeyboardInterrupt())
    assert main(["eps", "somewhere"]) == 130
    err = capsys.readouterr().err
    assert err.strip() == "cacl: interrupted"


def test_unexpected_errors_are_one_line_unless_debugging(monkeypatch, capsys):
    _command_raising(monkeypatch, ValueError("batch size must be positive\nmore text"))
    monkeypatch.delenv("CACL_DEBUG", raising=False)
    assert main(["eps", "somewhere"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "ValueError: batch size must be positive" in err
    assert "Traceback" not in err
    monkeypatch.setenv("CACL_DEBUG", "1")
    assert main(["eps", "somewhere"]) == 1
    assert "Traceback" in capsys.readouterr().err


@pytest.mark.parametrize(
    "override,valid",
    [
        ("data.camera=bogus", "auto, regex, subfolder, none"),
        ("data.name=nosuch", "market1501"),
        ("data.verify=sometimes", "none, header, full"),
        ("cluster.knn=annoy", "auto, exact, approximate, torch, faiss"),
    ],
)
def test_enumerated_config_values_fail_when_read(override, valid):
    with pytest.raises(ConfigError, match=valid):
        load_config("smoke", [override])


def test_folder_cam_regex_reaches_the_reader(tmp_path):
    from PIL import Image

    from cacl.data.default import resolve_dataset

    for i, cam in enumerate([3, 3, 7, 7]):
        Image.new("RGB", (8, 16), (i * 40, 0, 0)).save(tmp_path / f"img{i}_view{cam}.jpg")
    cfg = load_config(
        "smoke",
        [
            "data.name=folder",
            f"data.root={tmp_path}",
            "data.camera=regex",
            r"data.cam_regex=view(\d+)",
        ],
    )
    data = resolve_dataset(**cfg.data.dataset_options())
    assert sorted({s.camid for s in data.train}) == [0, 1]


def test_ctrl_c_during_training_says_how_to_resume(monkeypatch, tmp_path, capsys):
    from cacl.engine.trainer import Trainer

    monkeypatch.setenv("CACL_CACHE", str(tmp_path / "cache"))

    def interrupted_fit(self):
        self.epoch = 3  # as after three finished epochs
        raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "fit", interrupted_fit)
    out = tmp_path / "run"
    assert main(["train", "--config", "smoke", "--output", str(out)]) == 130
    err = capsys.readouterr().err
    assert "Traceback" not in err
    ours = [line for line in err.splitlines() if line.startswith("cacl:")]  # the rest is the log
    assert len(ours) == 1 and "last finished epoch: 3" in ours[0]
    assert f"cacl train --resume {out}" in ours[0]


def test_argument_errors_are_one_line(tmp_path, capsys):
    assert main(["eps", str(tmp_path), "--eps", "2", "0"]) == 1
    assert "--eps values must lie in (0, 1)" in capsys.readouterr().err
    assert main(["eval", str(tmp_path), "--batch-size", "0"]) == 1
    assert "--batch-size must be at least 1" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert main(["eval", str(tmp_path), "--device", "cuda"]) == 1
        assert "use --device cpu" in capsys.readouterr().err


def test_a_damaged_checkpoint_says_so_without_unsafe_advice(tmp_path):
    from cacl.checkpoints.io import CheckpointError, load_checkpoint

    (tmp_path / "best.pt").write_bytes(b"\x80\x02not a checkpoint at all")
    with pytest.raises(CheckpointError, match="damaged") as info:
        load_checkpoint(tmp_path)
    assert "weights_only" not in str(info.value)


def test_report_of_a_run_without_test_split_says_so_once(tmp_path):
    from cacl.config import Config, save_config
    from cacl.report.html import make_report

    save_config(Config(), tmp_path / "config.yaml")
    history = [
        {
            "epoch": e,
            "cluster": {"clusters": 10 + e, "outliers": 5, "size_max": 9},
            "loss": {"L_I": -0.1, "L_C_inter": -0.2, "L_C_intra": 3.0, "total": 2.7},
        }
        for e in (1, 2)
    ]
    results = {"initial_mAP": None, "mAP": None, "best_epoch": 2, "history": history}
    write_json_atomic(results, tmp_path / "results.json")
    import re

    page = make_report(tmp_path, progress=False).read_text()
    text = re.sub(r"base64,[A-Za-z0-9+/=]+", "", page)  # the figures' bytes
    assert text.count("has no query / gallery split") == 1
    assert "no evaluated epoch yet" not in text and "nan" not in text.lower()
    assert "no CMC curve" not in page


def test_every_eval_option_has_help():
    from cacl.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    for command in ("eval",):
        options = [
            a for a in sub.choices[command]._actions if a.option_strings and a.dest != "help"
        ]
        assert options and all(a.help for a in options), [a.dest for a in options if not a.help]


def test_eval_of_a_run_without_test_split_says_what_to_pass(tmp_path, capsys, monkeypatch):
    from PIL import Image

    from cacl.checkpoints.io import atomic_save

    crops = tmp_path / "crops"
    crops.mkdir()
    for i in range(4):
        Image.new("RGB", (8, 16), (60 * i, 0, 0)).save(crops / f"{i:04d}_c{i % 2 + 1}s1_01.jpg")
    cfg = load_config("smoke", ["data.name=folder", f"data.root={crops}"])
    from cacl.models.network import CACLNet

    net = CACLNet("resnet18", "none", 1, True, True)
    atomic_save(
        {"format": "cacl-train-v1", "model": net.state_dict(), "config": cfg.to_dict(), "epoch": 1},
        tmp_path / "run" / "best.pt",
    )
    assert main(["eval", str(tmp_path / "run"), "--device", "cpu"]) == 1
    err = capsys.readouterr().err
    assert "no query / gallery split" in err and "--data NAME --root FOLDER" in err
