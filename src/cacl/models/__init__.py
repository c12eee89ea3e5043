"""Networks: ResNet backbones (last stride 1) and the two-branch CACL network."""

from cacl.models.backbone import backbone_names, build_backbone, load_weights_file
from cacl.models.network import Branch, CACLNet, Predictor, use_channels_last

__all__ = [
    "Branch",
    "CACLNet",
    "Predictor",
    "backbone_names",
    "build_backbone",
    "load_weights_file",
    "use_channels_last",
]
