"""cacl: unsupervised person re-identification with Cluster-guided Asymmetric Contrastive Learning.

The package is organised by concept:

- :mod:`cacl.data` -- dataset readers (Market-1501, DukeMTMC-reID, MSMT17, any folder) and the
  synthetic Market-style generator;
- :mod:`cacl.evaluation` -- retrieval metrics (mAP, CMC, mINP) with the Market-1501 protocol.
"""

__version__ = "0.1.0"
