"""Weight files from elsewhere: read them safely, unwrap the layouts people have, report the fit.

A weight file is read without running code from it:

- ``.safetensors``: :func:`safetensors.torch.load_file` (a flat tensor table, no pickle);
- anything else (``.pth``, ``.pt``, ``.bin``, ``.ckpt``): ``torch.load(..., weights_only=True)``,
  whose unpickler only builds tensors and plain containers;
- a TorchScript archive (how OpenAI distributes its CLIP models, e.g. ``ViT-B-16.pt``), which
  ``weights_only`` refuses: its tensors are read with ``torch.jit.load`` and ``state_dict()``.
  TorchScript is a restricted language run by its own interpreter, not pickle, and only the
  parameters are taken; no method of the archive is called.

Checkpoints of training code wrap the state dict (``{"state_dict": ...}``, ``{"model": ...}``,
DINO's ``{"teacher": ..., "student": ...}``) and prefix its keys (``module.``, ``backbone.``,
``base.``): :func:`unwrap_state_dict` takes them apart, so a LUPerson / TransReID-SSL ViT, a
timm file, an open_clip or OpenAI CLIP file and a torchvision ResNet all arrive as plain
``name -> tensor`` tables in the layout of their library. :class:`LoadReport` says what fit.
"""

from __future__ import annotations

import logging
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

from cacl.errors import CaclError
from cacl.files import file_sha256  # noqa: F401 - re-exported for the backbones

log = logging.getLogger(__name__)

#: wrappers of training checkpoints, tried in this order (DINO keeps the teacher for evaluation)
WRAPPER_KEYS = ("state_dict", "model", "teacher", "model_ema", "module", "student", "net")
#: key prefixes of training wrappers (DataParallel, DINO's MultiCropWrapper, TransReID's ``base``)
WRAPPER_PREFIXES = ("module.", "backbone.", "base.", "encoder.")
#: classifier / projection-head keys that a re-ID trunk never has
HEAD_PREFIXES = ("fc.", "_fc.", "head.", "heads.", "head_dist.", "classifier.", "dist_token")


class WeightsError(CaclError):
    """Pretrained weights could not be found, read or loaded."""


@dataclass
class LoadReport:
    """What loading a state dict into a module did: the file, its SHA-256, and the keys that did
    not fit (``ignored``: head keys dropped on purpose)."""

    source: str
    sha256: str | None = None
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)

    def summary(self) -> str:
        parts = [f"loaded {self.source}"]
        if self.sha256:
            parts.append(f"sha256 {self.sha256[:12]}...")
        parts.append(f"{len(self.missing)} missing, {len(self.unexpected)} unexpected keys")
        if self.ignored:
            parts.append(f"{len(self.ignored)} head keys ignored")
        return ", ".join(parts)


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("constants.pkl") for name in archive.namelist())


def read_weights_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The tensors of the weight file ``path`` as a flat ``name -> tensor`` dict (CPU), read
    safely (module docstring) and unwrapped (:func:`unwrap_state_dict`)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise WeightsError(
            f"weights file not found: {path} (model.pretrained takes none, imagenet or a path)"
        )
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        elif _is_torchscript(path):
            log.info("%s is a TorchScript archive (OpenAI CLIP style): reading its tensors", path)
            state = torch.jit.load(str(path), map_location="cpu").state_dict()
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsError(
            f"cannot read weights file {path} ({type(exc).__name__}: {str(exc)[:200]}); "
            "expected a PyTorch state dict (.pth/.bin, read with weights_only=True), a "
            ".safetensors file or an OpenAI CLIP TorchScript archive"
        ) from exc
    return unwrap_state_dict(state, str(path))


def unwrap_state_dict(state: object, source: str = "state dict") -> dict[str, torch.Tensor]:
    """Take a state dict out of the containers training code saves it in.

    Follows :data:`WRAPPER_KEYS` while the top level holds no tensors, drops non-tensor entries
    (epochs, optimiser states at the top level are never reached), and strips
    :data:`WRAPPER_PREFIXES` when every key that has any prefix at all shares one.

    >>> sd = {"teacher": {"module.backbone.cls_token": torch.zeros(1)}, "epoch": 3}
    >>> list(unwrap_state_dict(sd))
    ['cls_token']
    """
    for _ in range(4):
        if not isinstance(state, dict):
            break
        if any(isinstance(v, torch.Tensor) for v in state.values()):
            break
        inner = next((state[k] for k in WRAPPER_KEYS if isinstance(state.get(k), dict)), None)
        if inner is None:
            break
        state = inner
    if not isinstance(state, dict):
        raise WeightsError(f"{source} does not hold a state dict (found {type(state).__name__})")
    tensors = {str(k): v for k, v in state.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise WeightsError(f"{source} holds no tensors")
    changed = True
    while changed:
        changed = False
        for prefix in WRAPPER_PREFIXES:
            if all(k.startswith(prefix) for k in tensors):
                tensors = {k[len(prefix) :]: v for k, v in tensors.items()}
                changed = True
    # DINO teachers keep a projection head beside the backbone under their own prefix
    backbone = {k[len("backbone.") :]: v for k, v in tensors.items() if k.startswith("backbone.")}
    if backbone and len(backbone) * 2 > len(tensors):
        tensors = backbone
    return tensors


def split_head(
    state: dict[str, torch.Tensor], own: dict[str, torch.Tensor]
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """``state`` without the classifier / head keys that the module ``own`` does not have (a
    ConvNeXt's ``head.norm`` stays: it is part of the trunk's pooling), and the keys dropped."""
    kept = {k: v for k, v in state.items() if k in own or not k.startswith(HEAD_PREFIXES)}
    return kept, [k for k in state if k not in kept]


def load_into(
    module: torch.nn.Module,
    state: dict[str, torch.Tensor],
    source: str,
    *,
    strict: bool = True,
    sha256: str | None = None,
) -> LoadReport:
    """Load ``state`` (head keys dropped) into ``module`` and report every key that did not fit.

    A missing key or a shape mismatch is a :class:`WeightsError` that lists them (a backbone
    with random parts is never loaded silently); unexpected keys are too with ``strict``, and
    otherwise logged and kept in the report.
    """
    own = module.state_dict()
    state, ignored = split_head(state, own)
    report = LoadReport(source, sha256, ignored=ignored)
    report.missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    report.unexpected = [k for k in state if k not in own]
    mismatched = [
        f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
        for k in state
        if k in own and state[k].shape != own[k].shape
    ]
    fatal = []
    if report.missing:
        fatal.append(f"{len(report.missing)} missing (e.g. {report.missing[:4]})")
    if mismatched:
        fatal.append(f"{len(mismatched)} of another shape (e.g. {mismatched[:3]})")
    extra = f"{len(report.unexpected)} unexpected (e.g. {report.unexpected[:4]})"
    if fatal or (strict and report.unexpected):
        problems = fatal + ([extra] if report.unexpected else [])
        raise WeightsError(
            f"{source} does not fit the backbone: {'; '.join(problems)}. Is it a checkpoint of "
            "the same architecture as model.backbone?"
        )
    if report.unexpected:
        log.warning("%s: ignoring %s", source, extra)
    fitting = {k: v for k, v in state.items() if k in own}
    module.load_state_dict(fitting, strict=False)
    log.info("%s", report.summary())
    return report
