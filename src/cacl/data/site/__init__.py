"""Sites: camera footage and a tracker's output (MOTChallenge text), and the crops cut from them.

- :mod:`~cacl.data.site.mot`: the tracks files, in the variants trackers write;
- :mod:`~cacl.data.site.layout`: the cameras of a site folder, their frames and clocks;
- :mod:`~cacl.data.site.frames`: reading the frames once, in order (image sequences, PyAV);
- :mod:`~cacl.data.site.select`: which boxes become crops (clipping, filters, sampling);
- :mod:`~cacl.data.site.crops`: ``cacl crops``, with resume after a kill;
- :mod:`~cacl.data.site.truth`: ground-truth identities of tracker boxes, for measuring.
"""

from cacl.data.site.crops import TRACKLETS_CSV, cut_site
from cacl.data.site.layout import Site, read_site
from cacl.data.site.mot import MotFormatError, MotTracks, read_mot
from cacl.data.site.select import CropOptions

__all__ = [
    "TRACKLETS_CSV",
    "CropOptions",
    "MotFormatError",
    "MotTracks",
    "Site",
    "cut_site",
    "read_mot",
    "read_site",
]
