"""Time as a re-ID cue: camera-pair transit times learned from pseudo labels, fused with
appearance (st-ReID, Wang et al., AAAI 2019, estimated without labels)."""

from cacl.temporal.fusion import fuse, fused_distance
from cacl.temporal.transit import TransitModel, compare, fit_transit

__all__ = ["TransitModel", "compare", "fit_transit", "fuse", "fused_distance"]
