"""Checkpoint I/O: atomic writes, safe loading, run directories, RNG state round trip."""

from __future__ import annotations

import argparse
import random

import numpy as np
import pytest
import torch

from cacl.checkpoints.io import (
    CheckpointError,
    atomic_save,
    load_checkpoint,
    rng_state,
    set_rng_state,
)


def test_atomic_save_keeps_the_old_file_when_writing_fails(tmp_path, monkeypatch):
    target = tmp_path / "last.pt"
    atomic_save({"epoch": 1}, target)

    def broken_save(obj, handle):
        handle.write(b"partial")
        raise RuntimeError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(RuntimeError, match="disk full"):
        atomic_save({"epoch": 2}, target)
    monkeypatch.undo()
    assert load_checkpoint(target)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temporary left behind


def test_run_directory_resolves_best_then_last(tmp_path):
    atomic_save({"which": "last"}, tmp_path / "last.pt")
    assert load_checkpoint(tmp_path)["which"] == "last"
    atomic_save({"which": "best"}, tmp_path / "best.pt")
    assert load_checkpoint(tmp_path)["which"] == "best"
    assert load_checkpoint(tmp_path, prefer="last.pt")["which"] == "last"
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no best.pt or last.pt"):
        load_checkpoint(tmp_path / "empty")


def test_unsafe_pickles_are_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"x": argparse.Namespace(command="rm -rf")}, path)  # any non-allowlisted class
    with pytest.raises(CheckpointError, match="cannot read .*not a cacl checkpoint"):
        load_checkpoint(path)


def test_rng_state_round_trip_through_a_checkpoint(tmp_path):
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    atomic_save({"rng": rng_state()}, tmp_path / "c.pt")
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    set_rng_state(load_checkpoint(tmp_path / "c.pt")["rng"])
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected
