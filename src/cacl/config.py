"""Typed configuration: dataclass sections, read from YAML, with ``key=value`` overrides.

>>> cfg = load_config("configs/smoke.yaml", ["train.epochs=2", "model.backbone=resnet18"])  # doctest: +SKIP

Unknown sections or keys are errors that list the valid ones; values are converted to the type of
the field (``true``/``false`` for booleans, ``none`` for optional fields). The resolved config is
saved beside every run (:func:`save_config`).
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from cacl.errors import CaclError


class ConfigError(CaclError):
    """A config file or override is invalid."""


@dataclass
class DataConfig:
    name: str = "synthetic"  # a dataset reader name (cacl datasets lists them)
    root: str | None = None  # None with name=synthetic: generate synth_preset in the cache folder
    synth_preset: str = "small"
    synth_seed: int = 0
    height: int = 256
    width: int = 128
    pad: int = (
        10  # pad-and-crop margin of the training views, pixels (docs/method.md: 10 at 256x128)
    )
    workers: int = 4
    verify: str = "header"
    camera: str = "auto"  # folder reader: where camera ids come from (auto|regex|subfolder|none)
    cam_regex: str | None = None  # folder reader: file-name regex, group 1 = camera (None: default)
    # folder reader: read tracklets.csv beside the crops (cacl crops): camera, tracklet and time
    # of every crop, for tracklet-aware pseudo labels (auto | off)
    tracklets: str = "auto"
    # a test split in the Market-1501 layout (query/, bounding_box_test/) to evaluate on, e.g.
    # a synthetic site's eval/ or an exported labelled split; replaces the dataset's own
    eval_root: str | None = None
    # Random views from the loader's random streams ("loader"), or from a seed per item of the
    # global batch ("sample": the same views whatever the number of processes or workers).
    view_rng: str = "loader"

    def dataset_options(self, name: str | None = None, root: str | None = None) -> dict[str, Any]:
        """The arguments of :func:`cacl.data.default.resolve_dataset`; ``name`` / ``root`` (a
        command line's ``--data`` / ``--root``) override the config's: a new name comes with its
        own root (None: the synthetic cache), a root alone keeps the name; either drops the
        config's ``eval_root`` (the command line names the data to use)."""
        eval_root = self.eval_root
        if name or root:
            eval_root = None
            name, root = name or self.name, root
        else:
            name, root = self.name, self.root
        return {
            "name": name,
            "root": root,
            "synth_preset": self.synth_preset,
            "synth_seed": self.synth_seed,
            "verify": self.verify,
            "camera": self.camera,
            "cam_regex": self.cam_regex,
            "tracklets": self.tracklets,
            "eval_root": eval_root,
        }


@dataclass
class ModelConfig:
    backbone: str = "resnet50"
    pretrained: str = "imagenet"  # imagenet | none | PATH
    last_stride: int = 1
    gray_branch: bool = True
    predictor: bool = True
    # Set the BN necks' running statistics from the training set before the memory is filled
    # (not in the authors' code; see README). False: the new neck starts at mean 0 / variance 1.
    calibrate_neck: bool = False
    sync_bn: bool = False  # multi-process: BatchNorm statistics over the global batch
    # auto: a backbone whose pretrained weights expect another input convention than ImageNet's
    # mean / std converts inside the network (EfficientNet-Lite0: (x - 0.5) / 0.5); imagenet: no
    # conversion (runs saved before this option existed load as imagenet).
    input_norm: str = "auto"
    # Transformers (timm ViT / CLIP / DINOv2 names): the patch embedding's stride (0: the patch
    # size; 12 with patch 16 gives TransReID's overlapping patches) and the pooled feature
    # (auto: timm's default, the CLS token for ViTs; token | avg).
    patch_stride: int = 0
    global_pool: str = "auto"
    drop_path: float = 0.0  # stochastic depth of timm models (TransReID-SSL: 0.3)
    # Written by the run, not read: SHA-256 of the model.pretrained file (null: no file).
    pretrained_sha256: str | None = None


@dataclass
class ClusterConfig:
    eps: float = 0.6
    eps_gap: float = 0.02
    k1: int = 30
    k2: int = 6
    min_samples: int = 4
    refine: bool = True
    ratio: float = 1.0
    outliers: str = "singleton"  # singleton | drop
    # Neighbour search: exact | approximate (PCA-projection candidates, exact distances, recall
    # logged) | auto (approximate from 100,000 rows on); torch / faiss (older configs): exact with
    # that engine.
    knn: str = "auto"
    knn_backend: str = "auto"  # exact search engine: auto | torch | faiss
    knn_dim: int = 64  # approximate search: dimensions of the projection the candidates come from
    on_no_cluster: str = "continue"  # continue | stop
    # Camera-aware options (docs/method.md, "Beyond the paper"); the defaults are the paper's pipeline.
    # memory: cluster the branch-1 memory (the paper); extract: cluster fresh eval-mode branch-1
    # features of every training image (test transform), as Cluster Contrast does, at the cost
    # of one extraction per epoch. The memory and the losses are the same either way.
    source: str = "memory"
    camera_norm: str = "none"  # none | center: cluster each memory row minus its camera's mean
    distance: str = "jaccard"  # jaccard | ca_jaccard (camera-aware Jaccard, CVPR 2024)
    k1_intra: int = 5  # CA-Jaccard: k-reciprocal neighbours on the intra-camera lists
    k1_inter: int = 20  # ... and on the inter-camera lists
    k2_intra: int = 3  # CA-Jaccard query expansion: first rows of the intra-camera list
    k2_inter: int = 3  # ... and of the inter-camera list
    # Data with tracklets (tracklets.csv of cacl crops; docs/method.md, "Tracklets"): both = all
    # crops of a tracklet share a label (must-link) and two tracklets of one camera seen at the
    # same time never share a cluster (cannot-link); must_link = the first only; none = neither
    # (their statistics are still logged).
    constraints: str = "both"
    # How tracklets are clustered (docs/method.md, "Tracklets"): mean = one feature per tracklet
    # (its crops' mean) with the k-reciprocal encoding at tracklet_k1 / tracklet_k2; contract =
    # the crops' encoding contracted to tracklets (measured never to join two cameras' tracklets
    # on the synthetic site).
    tracklet_encoding: str = "mean"
    tracklet_k1: int = 10
    tracklet_k2: int = 3
    # Time in the pseudo labels (docs/method.md, "Time as a cue"; crops with times on one clock):
    # on = from the second epoch, every cross-camera similarity of the clustering graph is scaled
    # by the previous epoch's transit-time model (1 for the likeliest transit, 0.34 for none).
    time: str = "off"
    # Splitting tracklets at likely identity switches (docs/method.md, "Tracklets"; TMC): on =
    # every epoch, a tracklet whose crops, in time order, fall into a before and an after further
    # apart than split_ratio x the median distance of two tracklets of one camera is cut there
    # (each side split_min crops or more), and the pieces are the tracklets of the constraints.
    # auto (the default) = on where the training crops have tracklets and constraints is not none
    # (README, "The synthetic site": +0.086 mAP at the default tracker faults, -0.032 with a
    # perfect tracker).
    split: str = "auto"
    split_ratio: float = 0.5
    split_min: int = 3
    # Cutting tracklets where two tracklets' boxes overlap in one frame (docs/method.md,
    # "Tracklets"; where trackers swap ids): on = every such crossing crop is a piece of its own
    # and the rest of the tracklet is cut around it, before the cut by features; needs the boxes
    # and frames of tracklets.csv (cacl crops writes them). split_iou: the overlap that counts.
    # candidates = nothing is cut for the crossing alone: the cut by features (cluster.split)
    # may fall only next to a crossing crop. Off by default: at 4x the tracker faults "on"
    # fragments the tracklets so much that the mAP falls to 0.266 (README, "The synthetic site").
    split_crossings: str = "off"
    split_iou: float = 0.0

    def tracklet_options(self) -> dict[str, Any]:
        """The tracklet keyword arguments of :func:`cacl.clustering.pseudo_labels_with_stats`."""
        names = ("tracklet_encoding", "tracklet_k1", "tracklet_k2")
        return {name: getattr(self, name) for name in names}

    def encoding_options(self) -> dict[str, Any]:
        """The keyword arguments of :func:`cacl.clustering.pseudo_labels.encoding`."""
        names = ("k1", "k2", "distance", "camera_norm", "k1_intra", "k1_inter", "k2_intra")
        return {name: getattr(self, name) for name in (*names, "k2_inter")}

    def knn_options(self) -> dict[str, Any]:
        """The neighbour-search keyword arguments of :func:`cacl.clustering.pseudo_labels.encoding`
        (an older config's ``knn: torch | faiss`` is the exact search with that engine)."""
        if self.knn in ("torch", "faiss"):
            return {"knn": "exact", "backend": self.knn, "options": {"dim": self.knn_dim}}
        return {"knn": self.knn, "backend": self.knn_backend, "options": {"dim": self.knn_dim}}

    def clustering_options(self) -> dict[str, Any]:
        """The keyword arguments of :func:`cacl.clustering.labels_from_distance`."""
        names = ("eps", "eps_gap", "min_samples", "refine", "ratio")
        return {name: getattr(self, name) for name in names}


@dataclass
class LossConfig:
    temperature: float = 0.05
    gamma: float = 2.0
    instance_weight: float = 1.0
    inter_weight: float = 1.0
    intra_weight: float = 1.0
    # Inter-camera proxy term beyond the paper (ICE / PPLR; docs/method.md): 0 = off (the paper's CACL)
    camera_weight: float = 0.0
    camera_temperature: float = 0.07
    camera_negatives: int = 50  # hardest other-class proxies per sample
    camera_branches: str = "colour"  # colour: branch 1 only | both: also the gray memory


@dataclass
class OptimConfig:
    name: str = "adam"  # adam (the paper's) | adamw | sgd
    lr: float = 3.5e-4
    weight_decay: float = 5e-4
    momentum: float = 0.9  # sgd only
    step_size: int = 20
    lr_gamma: float = 0.1
    # Linear warm-up over the first warmup_epochs epochs, from lr * warmup_factor to lr (ViT
    # recipes); 0: none (the paper's schedule).
    warmup_epochs: int = 0
    warmup_factor: float = 0.01
    # Weight decay on every trainable tensor (the paper), or none on biases, normalisation
    # weights, position embeddings and class tokens (false: the ViT recipes' exemptions).
    decay_all: bool = True


@dataclass
class MemoryConfig:
    alpha: float = 0.2  # the instance memories' update: v <- alpha v + (1 - alpha) x
    # Storage of the memory rows: float32 | float16 (half the memory: 4 GB instead of 8 per bank
    # of 10^6 x 2048); updates, centroids and camera proxies are computed in float32 either way.
    dtype: str = "float32"


@dataclass
class TrainConfig:
    epochs: int = 80
    iters: int = 400
    batch_size: int = 64  # the global batch (all processes together), P x K
    num_instances: int = 4
    eval_every: int = 5
    seed: int = 1
    deterministic: bool = False
    supervised: bool = False
    device: str = "auto"
    max_grad_norm: float = 0.0  # 0: no clipping
    explode_loss: float = 1e4  # stop when a loss exceeds this (or is NaN)
    amp: bool = False  # mixed precision (autocast) for the forward pass
    amp_dtype: str = "auto"  # auto (bfloat16 where supported, else float16) | bfloat16 | float16
    channels_last: bool = True  # NHWC layout for the convolutions (same results, faster on CPU)
    # Seconds the whole command may take (0: no limit). The trainer times the first steps and
    # shrinks epochs x iters to fit where the configured schedule would not (cacl.engine.budget).
    budget: float = 0.0
    # What the budget chose and why, written by the run that planned (None: not planned yet). A
    # run with a plan keeps its schedule: a resumed run does not plan again.
    budget_plan: str | None = None


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    memory: MemoryConfig = field(default_factory=MemoryConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def network_options(self) -> dict[str, Any]:
        """The keyword arguments of :class:`cacl.models.CACLNet` beyond its positional ones: the
        image size a transformer's position grid is built for, its patch stride, pooling, drop
        path."""
        m = self.model
        return {
            "image_size": (self.data.height, self.data.width),
            "patch_stride": m.patch_stride,
            "global_pool": m.global_pool,
            "drop_path": m.drop_path,
        }


def _field_types(section: Any) -> dict[str, Any]:
    hints = typing.get_type_hints(type(section))
    return {f.name: hints[f.name] for f in dataclasses.fields(section)}


def _convert(value: Any, annotation: Any, key: str) -> Any:
    """Convert ``value`` (from YAML or an override string) to the field type ``annotation``."""
    optional = False
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        optional = len(args) < len(typing.get_args(annotation))
        annotation = args[0]
    if optional and isinstance(value, str) and value.strip().lower() in ("none", "null", "~"):
        return None
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{key} cannot be none")
    try:
        if annotation is bool:
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("true", "yes", "1", "on"):
                return True
            if text in ("false", "no", "0", "off"):
                return False
            raise ValueError(value)
        if annotation is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return (
                int(float(value)) if isinstance(value, str) and "e" in value.lower() else int(value)
            )
        if annotation is float:
            return float(value)
        if annotation is str:
            if isinstance(value, bool):  # YAML reads a bare off / on / no / yes as a boolean
                return "on" if value else "off"
            return str(value)
    except (TypeError, ValueError):
        raise ConfigError(
            f"{key}: cannot read {value!r} as {getattr(annotation, '__name__', annotation)}"
        ) from None
    raise ConfigError(f"{key}: unsupported field type {annotation}")


#: Values of ``memory.dtype`` (:data:`cacl.memory.DTYPES` names).
MEMORY_DTYPES = ("float32", "float16")

#: Keys that were renamed: configs and runs written with the old name still load.
RENAMED = {"train.momentum": "memory.alpha"}


def _set(cfg: Config, dotted: str, value: Any) -> None:
    dotted = RENAMED.get(dotted, dotted)
    parts = dotted.split(".")
    sections = [f.name for f in dataclasses.fields(cfg)]
    if len(parts) != 2 or parts[0] not in sections:
        raise ConfigError(
            f"unknown config key {dotted!r}: keys are SECTION.NAME with SECTION one of "
            f"{', '.join(sections)}"
        )
    section = getattr(cfg, parts[0])
    types_ = _field_types(section)
    if parts[1] not in types_:
        raise ConfigError(
            f"unknown config key {dotted!r}; valid keys of {parts[0]}: {', '.join(types_)}"
        )
    setattr(section, parts[1], _convert(value, types_[parts[1]], dotted))


def apply_dict(cfg: Config, data: dict[str, Any], source: str = "config") -> Config:
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping of sections, got {type(data).__name__}")
    for section, values in data.items():
        if not isinstance(values, dict):
            raise ConfigError(f"{source}: section {section!r} must be a mapping")
        for key, value in values.items():
            _set(cfg, f"{section}.{key}", value)
    return cfg


def parse_override(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like section.key=value")
    key, raw = text.split("=", 1)
    return key.strip(), raw.strip()


CONFIG_DIR = Path(__file__).resolve().parent / "configs"


def config_names() -> list[str]:
    """Names of the configs shipped with the package (``configs/NAME.yaml``)."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def find_config(name_or_path: str | os.PathLike) -> Path:
    """A YAML path as given, or the shipped config of that name (``market1501``, ``smoke`` ...)."""
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path
    shipped = CONFIG_DIR / f"{name_or_path}.yaml"
    if shipped.is_file():
        return shipped
    raise ConfigError(
        f"config file not found: {path} (shipped configs: {', '.join(config_names())})"
    )


def load_config(path: str | os.PathLike | None = None, overrides: list[str] = ()) -> Config:
    """Defaults, then the YAML file (if any), then the ``key=value`` overrides, in that order.

    ``path`` is a YAML file or the name of a shipped config (see :func:`config_names`).
    """
    cfg = Config()
    if path is not None:
        path = find_config(path)
        with open(path, encoding="utf-8") as handle:
            try:
                data = yaml.safe_load(handle) or {}
            except yaml.YAMLError as exc:
                raise ConfigError(f"{path}: invalid YAML: {exc}") from exc
        apply_dict(cfg, data, str(path))
    return apply_overrides(cfg, overrides)


def apply_overrides(cfg: Config, overrides: list[str]) -> Config:
    """Apply ``section.key=value`` strings to ``cfg`` in order, then validate it."""
    for text in overrides:
        _set(cfg, *parse_override(text))
    validate(cfg)
    return cfg


def _check_choice(key: str, value: str, choices) -> None:
    if value not in choices:
        choices = list(choices)
        valid = " or ".join(choices) if len(choices) == 2 else f"one of {', '.join(choices)}"
        raise ConfigError(f"{key} must be {valid}, got {value!r}")


def validate(cfg: Config) -> None:
    """Cross-field checks with messages that say what to change."""
    from cacl.data.images import VERIFY_MODES
    from cacl.data.readers import dataset_names
    from cacl.data.readers.folder import CAMERA_MODES
    from cacl.data.readers.tracklets import TRACKLET_MODES

    _check_choice("data.name", cfg.data.name.lower(), [*dataset_names(), "synthetic", "synth"])
    _check_choice("data.verify", cfg.data.verify, VERIFY_MODES)
    _check_choice("data.camera", cfg.data.camera, CAMERA_MODES)
    _check_choice("data.tracklets", cfg.data.tracklets, TRACKLET_MODES)
    _check_choice(
        "cluster.knn", cfg.cluster.knn, ("auto", "exact", "approximate", "torch", "faiss")
    )
    _check_choice("cluster.knn_backend", cfg.cluster.knn_backend, ("auto", "torch", "faiss"))
    if cfg.cluster.knn_dim < 1:
        raise ConfigError(f"cluster.knn_dim must be at least 1, got {cfg.cluster.knn_dim}")
    t = cfg.train
    if t.batch_size % t.num_instances:
        raise ConfigError(
            f"train.batch_size ({t.batch_size}) must be a multiple of train.num_instances "
            f"({t.num_instances})"
        )
    if t.amp_dtype not in ("auto", "bfloat16", "float16"):
        raise ConfigError(f"train.amp_dtype must be auto, bfloat16 or float16, got {t.amp_dtype!r}")
    if cfg.data.view_rng not in ("loader", "sample"):
        raise ConfigError(f"data.view_rng must be loader or sample, got {cfg.data.view_rng!r}")
    _check_choice("cluster.constraints", cfg.cluster.constraints, ("none", "must_link", "both"))
    _check_choice("cluster.tracklet_encoding", cfg.cluster.tracklet_encoding, ("mean", "contract"))
    _check_choice("cluster.time", cfg.cluster.time, ("off", "on"))
    _check_choice("cluster.split", cfg.cluster.split, ("off", "on", "auto"))
    if cfg.cluster.split == "on" and cfg.cluster.constraints == "none":
        raise ConfigError(
            "cluster.split=on cuts tracklets for the constraints: give cluster.constraints="
            "must_link or both (or cluster.split=off)"
        )
    crossings = cfg.cluster.split_crossings
    _check_choice("cluster.split_crossings", crossings, ("off", "on", "candidates"))
    if crossings != "off" and cfg.cluster.constraints == "none":
        raise ConfigError(
            f"cluster.split_crossings={crossings} cuts tracklets for the constraints: give "
            "cluster.constraints=must_link or both (or cluster.split_crossings=off)"
        )
    if crossings == "candidates" and cfg.cluster.split == "off":
        raise ConfigError(
            "cluster.split_crossings=candidates lets the cut by features fall only at crossings: "
            "give cluster.split=on or auto (or cluster.split_crossings=off)"
        )
    if not 0 <= cfg.cluster.split_iou < 1:
        raise ConfigError(f"cluster.split_iou must lie in [0, 1), got {cfg.cluster.split_iou}")
    if cfg.cluster.split_ratio <= 0 or cfg.cluster.split_min < 1:
        raise ConfigError(
            f"cluster.split_ratio must be above 0 and cluster.split_min 1 or more, got "
            f"{cfg.cluster.split_ratio} and {cfg.cluster.split_min}"
        )
    if cfg.cluster.outliers not in ("singleton", "drop"):
        raise ConfigError("cluster.outliers must be singleton or drop")
    if cfg.cluster.on_no_cluster not in ("continue", "stop"):
        raise ConfigError("cluster.on_no_cluster must be continue or stop")
    _check_choice("model.input_norm", cfg.model.input_norm, ("auto", "imagenet"))
    _check_choice("model.global_pool", cfg.model.global_pool, ("auto", "token", "avg"))
    if cfg.model.patch_stride < 0 or not 0 <= cfg.model.drop_path < 1:
        raise ConfigError("model.patch_stride must be >= 0 and model.drop_path in [0, 1)")
    if cfg.model.last_stride not in (1, 2):
        raise ConfigError(f"model.last_stride must be 1 or 2, got {cfg.model.last_stride}")
    o = cfg.optim
    _check_choice("optim.name", o.name, ("adam", "adamw", "sgd"))
    if o.lr <= 0 or o.weight_decay < 0 or o.warmup_epochs < 0 or not 0 < o.warmup_factor <= 1:
        raise ConfigError(
            "optim.lr must be > 0, optim.weight_decay >= 0, optim.warmup_epochs >= 0 and "
            "optim.warmup_factor in (0, 1]"
        )
    _check_choice("memory.dtype", cfg.memory.dtype, MEMORY_DTYPES)
    _check_choice("loss.camera_branches", cfg.loss.camera_branches, ("colour", "both"))
    if cfg.loss.camera_weight < 0 or cfg.loss.camera_temperature <= 0:
        raise ConfigError("loss.camera_weight must be >= 0 and loss.camera_temperature > 0")
    if cfg.loss.camera_negatives < 1:
        raise ConfigError("loss.camera_negatives must be at least 1")
    _check_choice("cluster.source", cfg.cluster.source, ("memory", "extract"))
    _check_choice("cluster.camera_norm", cfg.cluster.camera_norm, ("none", "center"))
    _check_choice("cluster.distance", cfg.cluster.distance, ("jaccard", "ca_jaccard"))
    c = cfg.cluster
    if min(c.k1_intra, c.k1_inter) < 1 or min(c.k2_intra, c.k2_inter) < 0:
        raise ConfigError(
            "cluster.k1_intra and cluster.k1_inter must be at least 1, "
            "cluster.k2_intra and cluster.k2_inter at least 0"
        )
    if c.k2_intra > c.k1_intra + 1 or c.k2_inter > c.k1_inter + 1:
        raise ConfigError("cluster.k2_intra / k2_inter may be at most k1_intra + 1 / k1_inter + 1")
    if not 0 < cfg.cluster.eps < 1:
        raise ConfigError(
            f"cluster.eps must be in (0, 1) (a Jaccard distance), got {cfg.cluster.eps}"
        )
    if t.epochs < 1 or t.iters < 1 or t.eval_every < 1:
        raise ConfigError("train.epochs, train.iters and train.eval_every must be at least 1")
    if not t.budget >= 0:  # NaN too
        raise ConfigError(f"train.budget must be >= 0 seconds (0: no limit), got {t.budget}")


def save_config(cfg: Config, path: str | os.PathLike) -> None:
    """Write ``cfg`` as YAML, atomically (a crash leaves the old file or the new one)."""
    path = Path(path)
    part = path.with_name(path.name + ".part")
    with open(part, "w", encoding="utf-8") as handle:
        yaml.safe_dump(cfg.to_dict(), handle, sort_keys=False)
    os.replace(part, path)


def config_from_dict(data: dict[str, Any]) -> Config:
    """Rebuild a config saved with :func:`save_config` (e.g. from a checkpoint).

    A config saved before ``model.input_norm`` existed gets ``imagenet``: how it was trained.
    """
    model = data.get("model") if isinstance(data, dict) else None
    if isinstance(model, dict) and "input_norm" not in model:
        data = {**data, "model": {**model, "input_norm": "imagenet"}}
    cfg = apply_dict(Config(), data)
    validate(cfg)
    return cfg
