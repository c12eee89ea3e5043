"""cacl: unsupervised person re-identification with Cluster-guided Asymmetric Contrastive Learning.

The package is organised by concept:

- :mod:`cacl.data` -- dataset readers (Market-1501, DukeMTMC-reID, MSMT17, any folder) and the
  synthetic Market-style generator;
- :mod:`cacl.evaluation` -- retrieval metrics (mAP, CMC, mINP) with the Market-1501 protocol;
- :mod:`cacl.inference` -- :class:`cacl.FeatureExtractor`, ONNX export, gallery search.
"""

__version__ = "0.1.0"

__all__ = ["FeatureExtractor", "__version__"]


def __getattr__(name: str):
    # Imported on first use, so that ``import cacl`` does not load torch.
    if name == "FeatureExtractor":
        from cacl.inference.extractor import FeatureExtractor

        return FeatureExtractor
    raise AttributeError(f"module 'cacl' has no attribute {name!r}")
