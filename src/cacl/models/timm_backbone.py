"""Any timm model as a re-ID trunk: CNNs, ViTs, CLIP and DINOv2 image encoders.

``model.backbone`` takes any name that ``timm.list_models`` lists, with an optional pretrained
tag (``vit_small_patch16_224``, ``vit_base_patch16_clip_224.openai``,
``vit_small_patch14_dinov2.lvd142m``, ``convnext_tiny``, ``resnet50.a1_in1k``); ``timm/NAME``
forces timm where cacl has a name of its own (``timm/resnet50``). The model is built by timm
without its classifier (``num_classes=0``); cacl adds only what re-ID needs:

- the input adapter (:class:`~cacl.models.backbone.InputAdapter`): mean / std and interpolation
  come from the name's pretrained config (CLIP's are not ImageNet's) and travel with the network;
- CNNs: last stride 1. EfficientNets (the Lite family) and ResNets get a plain stride 1 in their
  last strided stage, as re-ID sets ResNet-50's layer4; other CNNs get timm's
  ``output_stride=16`` (the last stage dilated);
- ViTs: built for the training size (256 x 128: a 16 x 8 grid) with position embeddings
  resampled from the pretrained grid (:mod:`cacl.models.vit`); ``model.patch_stride`` for
  TransReID's overlapping patches; the feature is timm's pooled output (``forward_head`` with
  ``pre_logits``): the CLS token after the final norm for ViTs (``global_pool="token"``, what
  TransReID, TransReID-SSL and CLIP-ReID feed the BNNeck), ``model.global_pool=avg`` for the mean
  of the patch tokens. For CLIP the CLS token is taken before the image projection (768-d for
  ViT-B/16), the projection being timm's head.

Weights (``model.pretrained``): ``none``; ``imagenet``, the name's default weights from the local
Hugging Face cache or the hub (packaged files for the Lite family); or a PATH, read safely by
:mod:`cacl.models.weights` and translated by the architecture's own timm checkpoint filter
(OpenAI CLIP / open_clip layouts, DINOv2, ...).
"""

from __future__ import annotations

import importlib
import logging
import socket
from dataclasses import dataclass
from urllib.parse import urlparse

import torch
from torch import nn

from cacl.errors import CaclError
from cacl.models import lite
from cacl.models.vit import resample_pos_embed, set_patch_stride
from cacl.models.weights import LoadReport, WeightsError, file_sha256, load_into, read_weights_file

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
HUB_HOST = "huggingface.co"


@dataclass(frozen=True)
class InputConvention:
    """What a backbone's pretrained weights expect: per-channel mean / std of [0, 1] RGB and the
    resize interpolation."""

    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    interpolation: str = "bicubic"


def _timm():
    try:
        return importlib.import_module("timm")
    except ImportError as exc:  # a dependency of cacl; only a broken install gets here
        raise CaclError("timm backbones need the timm package: pip install timm") from exc


def timm_name(name: str) -> str:
    """The timm model name (with its tag) that ``name`` means: the Lite family's aliases, a
    ``timm/`` prefix stripped."""
    if name in lite.LITE_MODELS:
        return lite.LITE_MODELS[name][0]
    return name[len("timm/") :] if name.startswith("timm/") else name


def is_timm_name(name: str) -> bool:
    timm = _timm()
    return bool(timm.is_model(timm_name(name).split(".")[0]))


def input_convention(name: str) -> InputConvention:
    """The input convention of ``name``'s pretrained config (ImageNet's where it has none)."""
    timm = _timm()
    try:
        cfg = timm.models.get_pretrained_cfg(timm_name(name), allow_unregistered=False)
    except Exception:  # an unknown tag: the architecture's default config
        cfg = None
    if cfg is None:
        cfg = timm.models.get_pretrained_cfg(timm_name(name).split(".")[0])
    if cfg is None:
        return InputConvention()
    interpolation = cfg.interpolation if cfg.interpolation in ("bilinear", "bicubic") else "bicubic"
    return InputConvention(tuple(cfg.mean), tuple(cfg.std), interpolation)


class TimmTrunk(nn.Module):
    """A timm model without classifier: ImageNet-normalised images (B, 3, H, W) -> pooled
    features (B, ``out_channels``) (``forward_features`` then ``forward_head(pre_logits=True)``).
    """

    def __init__(self, model: nn.Module, name: str, convention: InputConvention) -> None:
        super().__init__()
        self.model = model
        self.name = name
        self.convention = convention
        # the pooled feature's length: a pre-logits head (MobileNetV3's conv_head) may widen it
        self.out_channels = int(getattr(model, "head_hidden_size", None) or model.num_features)
        self.input_adapter: nn.Module | None = None  # set by build_backbone
        self.load_report: LoadReport | None = None

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.input_adapter is not None:
            images = self.input_adapter(images)
        return self.model.forward_head(self.model.forward_features(images), pre_logits=True)


def _create(name: str, image_size: tuple[int, int], last_stride: int, options: dict) -> nn.Module:
    """timm's model ``name`` without classifier, for ``image_size`` where it takes one."""
    timm = _timm()
    # drop_rate=0 whatever a model's default: a classifier dropout would act on the pooled
    # feature that feeds the BN neck, and re-ID heads have none
    kwargs = {"pretrained": False, "num_classes": 0, "drop_rate": 0.0, **options}
    # global_pool=avg on a ViT pretrained with the CLS token: keep its final norm on every
    # token (fc_norm=False) instead of a new, untrained norm after pooling
    extra = [{"fc_norm": False}, {}] if options.get("global_pool") == "avg" else [{}]
    for more in extra:
        try:
            return timm.create_model(name, img_size=image_size, **kwargs, **more)
        except TypeError:  # not a transformer (no img_size), or no fc_norm argument
            continue
        except RuntimeError as exc:  # e.g. an unknown tag
            raise CaclError(f"timm cannot build {name!r}: {exc}") from exc
    model = timm.create_model(name, **kwargs)
    if last_stride == 1 and not _set_last_stride_one(model):
        try:
            model = timm.create_model(name, output_stride=16, **kwargs)
            log.info("%s: last stride 1 through timm's output_stride=16 (dilation)", name)
        except (TypeError, AssertionError, ValueError):
            log.warning("%s supports neither a last stride of 1 nor output_stride=16", name)
    return model


def _set_last_stride_one(model: nn.Module) -> bool:
    """Plain last stride 1 for the CNN families that re-ID uses it with; False for others."""
    kind = type(model).__name__
    if kind in ("EfficientNet", "MobileNetV3") and hasattr(model, "blocks"):
        lite.set_last_stride_one(model)
        return True
    if kind == "ResNet" and hasattr(model, "layer4"):
        block = model.layer4[0]
        for module in block.modules():
            if isinstance(module, (nn.Conv2d, nn.AvgPool2d)) and module.stride in ((2, 2), 2):
                module.stride = (1, 1) if isinstance(module, nn.Conv2d) else 1
        return True
    return False


def _filter_fn(model: nn.Module):
    module = importlib.import_module(type(model).__module__)
    return getattr(module, "checkpoint_filter_fn", None)


def translate_state_dict(state: dict[str, torch.Tensor], model: nn.Module, name: str) -> dict:
    """A foreign state dict in ``model``'s key layout: the Lite packages' names, then the
    position embedding resampled to the model's grid (non-square sources too), then the
    architecture's own timm checkpoint filter (OpenAI CLIP, open_clip, DINOv2 layouts)."""
    if lite.is_efficientnet_pytorch_layout(state) and hasattr(model, "blocks"):
        state = lite.to_timm_keys(state, lite.stage_lengths(model))
    pos = getattr(model, "pos_embed", None)
    for key in ("pos_embed", "visual.positional_embedding"):
        if pos is None or key not in state:
            continue
        value = state[key] if state[key].dim() == 3 else state[key].unsqueeze(0)
        if value.shape[1] != pos.shape[1]:
            prefix = 0 if getattr(model, "no_embed_class", False) else model.num_prefix_tokens
            grid = tuple(model.patch_embed.grid_size)
            resized = resample_pos_embed(value, grid, prefix)
            state[key] = resized if key == "pos_embed" else resized[0]
            log.info("%s: position embeddings resampled to a %dx%d grid", name, *grid)
    filter_fn = _filter_fn(model)
    if filter_fn is not None:
        try:
            state = filter_fn(state, model)
        except Exception as exc:
            raise WeightsError(
                f"timm's checkpoint filter of {name} failed on the file: {exc}"
            ) from exc
    return state


def _hub_cached_file(name: str) -> str | None:
    """The default weights of ``name`` in the local Hugging Face cache, if there."""
    cfg = _timm().models.get_pretrained_cfg(name)
    hub_id = getattr(cfg, "hf_hub_id", None) if cfg else None
    if not hub_id:
        return None
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    filenames = [getattr(cfg, "hf_hub_filename", None), "model.safetensors", "pytorch_model.bin"]
    for filename in filter(None, filenames):
        found = try_to_load_from_cache(hub_id, filename)
        if isinstance(found, str):
            return found
    return None


def _reachable(host: str, timeout: float = 3.0) -> bool:
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def _load_default_weights(model: nn.Module, name: str) -> LoadReport:
    """The default pretrained weights of timm's ``name``: cached file, else a download; no
    network is a one-line :class:`WeightsError` naming the fix, never a hang."""
    cached = _hub_cached_file(name)
    if cached:
        return load_weights(model, name, cached)
    timm = _timm()
    cfg = timm.models.get_pretrained_cfg(name)
    hosts = [HUB_HOST] if getattr(cfg, "hf_hub_id", None) else []
    if getattr(cfg, "url", None):
        hosts.append(urlparse(cfg.url).hostname or "")
    if not hosts:
        raise WeightsError(f"timm has no default weights for {name}: set model.pretrained=PATH")
    if not any(_reachable(h) for h in hosts if h):
        raise WeightsError(
            f"the default weights of {name} must be downloaded from {' or '.join(hosts)}, which "
            "this machine cannot reach: download them elsewhere (e.g. the hub's model.safetensors"
            f" of {getattr(cfg, 'hf_hub_id', None) or name}) and set model.pretrained=PATH"
        )
    from timm.models import load_pretrained

    load_pretrained(model, cfg.to_dict() if hasattr(cfg, "to_dict") else cfg, num_classes=0)
    return LoadReport(f"timm default weights of {name}")


def load_weights(model: nn.Module, name: str, path: str) -> LoadReport:
    """Load the weight file ``path`` into timm model ``model`` (see :func:`translate_state_dict`);
    missing or mis-shaped tensors are an error, unexpected keys are reported."""
    state = read_weights_file(path)
    state = translate_state_dict(state, model, name)
    return load_into(model, state, str(path), strict=False, sha256=file_sha256(path))


def build_timm_trunk(
    name: str,
    pretrained: str = "none",
    last_stride: int = 1,
    *,
    image_size: tuple[int, int] = (256, 128),
    patch_stride: int = 0,
    global_pool: str = "auto",
    drop_path: float = 0.0,
) -> TimmTrunk:
    """The timm trunk of ``name`` (module docstring) with weights ``pretrained``."""
    full = timm_name(name)
    options: dict = {}
    if global_pool != "auto":
        options["global_pool"] = global_pool
    if drop_path:
        options["drop_path_rate"] = drop_path
    model = _create(full, tuple(image_size), last_stride, options)
    report = None
    if name in lite.LITE_MODELS and pretrained == "imagenet":
        report = load_weights(model, name, str(lite.packaged_weights_path(name)))
    elif pretrained == "imagenet":
        report = _load_default_weights(model, full)
    elif pretrained not in ("none", "", None):
        report = load_weights(model, name, pretrained)
    if patch_stride and hasattr(model, "patch_embed"):
        set_patch_stride(model, patch_stride, tuple(image_size))
    trunk = TimmTrunk(model, name, input_convention(name))
    trunk.load_report = report
    return trunk
