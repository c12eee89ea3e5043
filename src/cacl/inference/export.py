"""ONNX export of branch 1 (the re-ID feature): :func:`export_onnx`.

The exported model
------------------
- input ``images``: float32, shape ``(batch, 3, H, W)`` (NCHW), ``batch`` dynamic, ``H`` x ``W``
  fixed to the checkpoint's ``data.height`` x ``data.width``;
- output ``features``: float32, shape ``(batch, D)``, each row L2-normalised (branch 1's ``x``);
  rank a gallery by squared Euclidean distance (``2 - 2 cos``), as ``cacl eval`` does.

The input is the test transform of :mod:`cacl.data.transforms`, the batch that
:meth:`cacl.FeatureExtractor.preprocess` returns: decode the image as RGB (not BGR), resize it to
``H`` x ``W`` with bicubic interpolation (PIL / torchvision ``BICUBIC``), scale to [0, 1], subtract
the ImageNet mean (0.485, 0.456, 0.406) and divide by the ImageNet std (0.229, 0.224, 0.225) per
channel, lay it out as CHW, stack to NCHW float32. The same description is stored in the model's
``metadata_props`` (keys ``cacl.*``), readable with ``onnx.load(path).metadata_props`` or
onnxruntime's ``session.get_modelmeta().custom_metadata_map``.

The export uses PyTorch's TorchScript-based exporter (``dynamo=False``): it needs only ``onnx``,
handles the dynamic batch axis cleanly, and works with every torch version cacl supports
(the newer dynamo exporter would add a dependency on ``onnxscript``). The file is written to a
temporary file beside the target and renamed over it, so a crash never leaves half a model.
"""

from __future__ import annotations

import importlib
import inspect
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from cacl import __version__
from cacl.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from cacl.errors import CaclError
from cacl.files import chmod_like_new_file

INPUT_NAME, OUTPUT_NAME = "images", "features"
OPSET = 17
INSTALL_HINT = "pip install 'cacl[export]'"


class ExportError(CaclError):
    """The model cannot be exported, or the export tools are not installed."""


@dataclass
class ExportResult:
    """Where the model went, its input size and feature length, and the check against PyTorch
    (``max_abs_diff`` is ``None`` when the export ran with ``check=False``)."""

    path: Path
    height: int
    width: int
    feature_dim: int
    max_abs_diff: float | None


def preprocessing_metadata(
    height: int, width: int, interpolation: str = "bicubic"
) -> dict[str, str]:
    """The ``metadata_props`` of an exported model: input, output and the test transform
    (``interpolation``: the backbone's, from its pretrained config)."""
    return {
        "cacl.input": f"{INPUT_NAME}: float32 [batch, 3, {height}, {width}] (NCHW), batch dynamic",
        "cacl.output": f"{OUTPUT_NAME}: float32 [batch, D], L2-normalised; compare with squared "
        "Euclidean distance",
        "cacl.preprocess": (
            f"RGB channel order; resize to height {height} x width {width} with {interpolation} "
            "interpolation; scale to [0, 1]; subtract mean, divide by std per channel; CHW"
        ),
        "cacl.resize": f"{height}x{width} {interpolation}",
        "cacl.mean": ",".join(str(v) for v in IMAGENET_MEAN),
        "cacl.std": ",".join(str(v) for v in IMAGENET_STD),
        "cacl.color_order": "RGB",
        "cacl.layout": "NCHW",
        "cacl.version": __version__,
    }


class _Branch1(nn.Module):
    """Branch 1 alone, returning its normalised feature ``x``."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.branch = getattr(network, "branch1", network)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        out = self.branch(images)
        return out[1] if isinstance(out, tuple) else out


def _require(module: str):
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ExportError(f"ONNX export needs the {module} package: {INSTALL_HINT}") from exc


def export_onnx(
    checkpoint: str | os.PathLike | nn.Module,
    out: str | os.PathLike,
    *,
    height: int | None = None,
    width: int | None = None,
    opset: int = OPSET,
    check: bool = True,
) -> ExportResult:
    """Export branch 1 of a trained model to ``out`` (an ``.onnx`` file).

    ``checkpoint`` is a checkpoint file or run folder (its ``data.height`` / ``data.width`` give
    the input size), or a CACL network / branch already in memory (then give ``height`` and
    ``width``). With ``check`` (needs onnxruntime), the exported file is run with onnxruntime on
    a random batch of 3 and compared with PyTorch; the largest absolute difference is returned.
    Raises :class:`ExportError` when onnx (or, with ``check``, onnxruntime) is not installed.
    """
    onnx = _require("onnx")
    if check:
        _require("onnxruntime")
    extra: dict[str, str] = {}
    if isinstance(checkpoint, nn.Module):
        if height is None or width is None:
            raise ExportError("height and width are needed to export a network in memory")
        network = checkpoint
    else:
        from cacl.checkpoints.network import load_network

        network, cfg, meta = load_network(checkpoint, "cpu", channels_last=False)
        height = height or cfg.data.height
        width = width or cfg.data.width
        extra = {
            "cacl.checkpoint": str(meta["_path"]),
            "cacl.backbone": cfg.model.backbone,
            # auto: a backbone trained on another input convention converts inside the graph;
            # the caller's preprocessing is cacl.mean / cacl.std either way
            "cacl.input_norm": cfg.model.input_norm,
        }
        if cfg.model.input_norm == "auto":  # what the graph's first op converts to
            from cacl.models.backbone import convention

            conv = convention(cfg.model.backbone)
            extra["cacl.backbone_mean"] = ",".join(str(v) for v in conv.mean)
            extra["cacl.backbone_std"] = ",".join(str(v) for v in conv.std)
        if cfg.model.pretrained_sha256:
            extra["cacl.pretrained_sha256"] = cfg.model.pretrained_sha256
    model = _Branch1(network).cpu().eval()
    sample = torch.rand(2, 3, height, width)
    with torch.no_grad():
        feature_dim = int(model(sample).shape[1])

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    os.close(fd)
    chmod_like_new_file(tmp)
    try:
        _torch_export(model, sample, tmp, opset)
        proto = onnx.load(tmp)
        from cacl.models.network import network_interpolation

        interpolation = network_interpolation(network)
        meta_props = {**preprocessing_metadata(height, width, interpolation), **extra}
        meta_props["cacl.feature_dim"] = str(feature_dim)
        for key, value in meta_props.items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value
        proto.doc_string = (
            "cacl branch-1 re-ID features. "
            + meta_props["cacl.input"]
            + ". "
            + meta_props["cacl.preprocess"]
            + f"; mean {IMAGENET_MEAN}, std {IMAGENET_STD}."
        )
        onnx.checker.check_model(proto)
        with open(tmp, "wb") as handle:
            handle.write(proto.SerializeToString())
            handle.flush()
            os.fsync(handle.fileno())
        max_diff = _compare_with_torch(model, tmp, height, width) if check else None
        os.replace(tmp, out)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return ExportResult(out, height, width, feature_dim, max_diff)


def _torch_export(model: nn.Module, sample: torch.Tensor, path: str, opset: int) -> None:
    kwargs = {}
    if "dynamo" in inspect.signature(torch.onnx.export).parameters:
        kwargs["dynamo"] = False  # the TorchScript exporter: no onnxscript dependency
    batch = {0: "batch"}
    with warnings.catch_warnings():
        # The legacy exporter announces its deprecation; tracing warns where EfficientNet-Lite's
        # "SAME" padding reads the input size, which is fixed (H x W) in the exported model.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        try:
            torch.onnx.export(
                model,
                (sample,),
                path,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: batch, OUTPUT_NAME: batch},
                opset_version=opset,
                do_constant_folding=True,
                **kwargs,
            )
        except Exception as exc:
            raise ExportError(f"torch.onnx.export failed: {exc}") from exc


def _compare_with_torch(model: nn.Module, path: str, height: int, width: int) -> float:
    """Largest absolute difference between onnxruntime's and PyTorch's features of a random
    batch of 3 (values spread like normalised images)."""
    import onnxruntime as ort

    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    batch = torch.randn(3, 3, height, width)
    with torch.no_grad():
        expected = model(batch).numpy()
    got = session.run([OUTPUT_NAME], {INPUT_NAME: batch.numpy()})[0]
    return float(abs(got - expected).max())
