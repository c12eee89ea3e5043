"""The transit model of each relabelling's pseudo labels, fitted once per relabelling.

Two users read it: ``transit.json`` (written after the relabelling of each epoch, for ``cacl eval
--st`` and ``cacl serve``) and ``cluster.time=on`` (the next relabelling weights its distances
by the previous labels' model). Both ask for the model of the same labels, so it is kept with
the labels it was fitted on and fitted again only when they change.
"""

from __future__ import annotations

import numpy as np

from cacl.temporal.run import epoch_transit
from cacl.temporal.transit import TransitModel


class EpochTransit:
    """The transit model of the training crops' pseudo labels (``camids``, ``times`` per crop)."""

    def __init__(self, camids: np.ndarray, times: np.ndarray) -> None:
        self.camids, self.times = camids, times
        self.fits = 0  # how many models were fitted (one per relabelling)
        self._labels: np.ndarray | None = None
        self._model: TransitModel | None = None

    def model(self, labels: np.ndarray, epoch: int | None = None) -> TransitModel | None:
        """The model of ``labels`` (None when no cluster spans two cameras: logged); the same
        array object asks for no second fit."""
        if labels is not self._labels:
            self._model = epoch_transit(labels, self.camids, self.times, epoch)
            self._labels = labels
            self.fits += 1
        return self._model
