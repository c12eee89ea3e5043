"""Why does (or doesn't) CACL beat the one-branch baseline? Three measurements per run folder.

For the untrained network of the first run's config (ImageNet weights, fresh necks) and for each
run folder given (its ``best.pt``; ``last.pt`` for the gradients):

- ``mAP b1`` / ``mAP b2``: the colour branch, and the gray branch on gray-scale images (the
  training-only branch; ``-`` for one-branch runs), Market-1501 protocol.
- ``same-cam``: among each query's 10 best-ranked *false* matches (after the protocol's
  same-identity-same-camera removal), the share taken from the query's own camera, against
  ``chance``: the share of the query's own camera among all its false candidates. A share far
  above chance means the features still encode the camera (colour cast, background).
- ``asym grad``: on ``--batches`` training batches drawn as in training (pseudo labels and memory
  banks of the checkpoint, or of epoch 1 for the untrained network), the norm of the gradient
  that the asymmetric terms ``L_I + L_C_inter`` send into the colour backbone, divided by the sum
  of that and the norm from ``L_C_intra``; ``cos``: the cosine between the two gradients.

    python benchmarks/diagnose_runs.py /tmp/table/cacl-seed1 /tmp/table/one-branch-seed1
"""

from __future__ import annotations

import argparse
import tempfile
import time
from itertools import islice
from pathlib import Path

import numpy as np
import torch

from cacl.checkpoints.io import LAST, load_checkpoint
from cacl.config import config_from_dict
from cacl.engine.step import compute_losses
from cacl.engine.trainer import Trainer
from cacl.evaluation.network import network_distances, score_distances


def camera_bias(distmat: np.ndarray, dataset, top: int = 10) -> tuple[float, float]:
    """Mean share of the query's camera among its ``top`` nearest false matches, and chance."""
    q_pids = np.array([s.pid for s in dataset.query])
    q_cams = np.array([s.camid for s in dataset.query])
    g_pids = np.array([s.pid for s in dataset.gallery])
    g_cams = np.array([s.camid for s in dataset.gallery])
    observed, chance = [], []
    for q in range(len(q_pids)):
        junk = (g_pids == q_pids[q]) & (g_cams == q_cams[q])
        false = (g_pids != q_pids[q]) & ~junk
        order = np.argsort(distmat[q], kind="stable")
        nearest = [g for g in order if false[g]][:top]
        observed.append(np.mean(g_cams[nearest] == q_cams[q]))
        chance.append(np.mean(g_cams[false] == q_cams[q]))
    return float(np.mean(observed)), float(np.mean(chance))


def scores(trainer: Trainer) -> dict[str, float]:
    """mAP of both branches and the camera bias of branch 1."""
    d, data = trainer.cfg.data, trainer.dataset
    kwargs = dict(height=d.height, width=d.width, device=trainer.device, progress=False)
    distmat = network_distances(trainer.model, data, **kwargs)
    row = {"mAP b1": score_distances(distmat, data)["mAP"]}
    row["same-cam"], row["chance"] = camera_bias(distmat, data)
    if trainer.model.branch2 is not None:
        gray = network_distances(trainer.model, data, branch=2, **kwargs)
        row["mAP b2"] = score_distances(gray, data)["mAP"]
    return row


def gradient_share(trainer: Trainer, batches: int) -> dict[str, float]:
    """Gradient norms into the colour backbone from the asymmetric terms and from L_C_intra."""
    if trainer.memory_tilde is None:
        return {}
    loader = trainer.epoch_loader()
    classes = torch.from_numpy(trainer.classes)
    params = list(trainer.model.branch1.backbone.parameters())
    trainer.model.train()
    asym, intra, cos = [], [], []
    w = trainer.cfg.loss
    for batch in islice(loader, batches):
        out = trainer.model(batch["colour"], batch["gray"])
        terms = compute_losses(
            out, classes[batch["index"]], trainer.memory, trainer.memory_tilde, trainer.cfg.loss
        )
        a = w.instance_weight * terms["L_I"] + w.inter_weight * terms["L_C_inter"]
        g_a = torch.autograd.grad(a, params, retain_graph=True, allow_unused=True)
        g_c = torch.autograd.grad(w.intra_weight * terms["L_C_intra"], params, allow_unused=True)
        flat_a = torch.cat([g.flatten() for g in g_a if g is not None])
        flat_c = torch.cat([g.flatten() for g in g_c if g is not None])
        asym.append(flat_a.norm().item())
        intra.append(flat_c.norm().item())
        cos.append(torch.nn.functional.cosine_similarity(flat_a, flat_c, dim=0).item())
    a, c = float(np.mean(asym)), float(np.mean(intra))
    return {"asym grad": a / (a + c), "cos": float(np.mean(cos))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run folders (best.pt, last.pt)")
    parser.add_argument("--batches", type=int, default=4, help="batches for the gradient norms")
    parser.add_argument("--no-untrained", action="store_true", help="skip the untrained row")
    args = parser.parse_args()
    torch.manual_seed(0)
    rows: list[tuple[str, dict[str, float]]] = []
    with tempfile.TemporaryDirectory() as scratch:
        first = load_checkpoint(args.runs[0], prefer=LAST)
        cfg = config_from_dict(first["config"])
        if not args.no_untrained:
            start = time.time()
            trainer = Trainer(cfg, Path(scratch) / "untrained", progress=False)
            trainer.init_memory()
            trainer.relabel()  # epoch 1's pseudo labels
            row = scores(trainer) | gradient_share(trainer, args.batches)
            rows.append(("untrained (epoch 1 state)", row))
            print(f"untrained: {time.time() - start:.0f} s", flush=True)
        for run in args.runs:
            start = time.time()
            state = load_checkpoint(run, prefer=LAST)
            run_cfg = config_from_dict(state["config"])
            trainer = Trainer(run_cfg, Path(scratch) / run.name, progress=False)
            trainer.load_state_dict(state)
            row = gradient_share(trainer, args.batches)
            trainer.model.load_state_dict(load_checkpoint(run)["model"])  # best.pt for scores
            rows.append((run.name, scores(trainer) | row))
            print(f"{run.name}: {time.time() - start:.0f} s", flush=True)
    keys = ["mAP b1", "mAP b2", "same-cam", "chance", "asym grad", "cos"]
    print("\n| run | " + " | ".join(keys) + " |")
    print("|---|" + "---|" * len(keys))
    for name, row in rows:
        cells = [f"{row[k]:.3f}" if k in row else "-" for k in keys]
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
