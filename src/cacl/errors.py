"""Exceptions whose messages are written for the user.

The command line prints these without a traceback; library callers can catch :class:`CaclError`.
"""


class CaclError(Exception):
    """Base class of errors caused by the user's input (paths, names, settings)."""


class DatasetError(CaclError, ValueError):
    """A dataset folder, split or file name is missing or does not have the expected form."""


class EvaluationError(CaclError, ValueError):
    """The evaluation inputs cannot give a result (e.g. no query has a valid match)."""


class TrainingError(CaclError):
    """Training cannot go on (NaN or exploding loss, no usable clusters ...)."""
