"""A procedural multi-camera pedestrian dataset in the Market-1501 layout (``cacl synth``).

Identity lives in body shape, garment patterns and accessories; garment colours come from a small
shared palette and every camera has its own strong colour cast, so colour alone matches poorly
across cameras (the colour dominance CACL is about). The modules, one concept each:

- :mod:`~cacl.data.synth.config`: :class:`SynthConfig` and the :data:`PRESETS`;
- :mod:`~cacl.data.synth.identity`: what a person looks like;
- :mod:`~cacl.data.synth.camera`: what a camera does to colours and what it sees behind people;
- :mod:`~cacl.data.synth.pose`: framing and posture per image;
- :mod:`~cacl.data.synth.render`: numpy rendering of one image;
- :mod:`~cacl.data.synth.plan`: splits, file names and random streams;
- :mod:`~cacl.data.synth.generate`: parallel writing and the output folder rules.

Example::

    >>> from cacl.data.synth import generate
    >>> summary = generate("data/synth_small", preset="small", seed=0)  # doctest: +SKIP
"""

from cacl.data.synth.config import PRESETS, SynthConfig, SynthConfigError
from cacl.data.synth.generate import SynthOutputError, generate

__all__ = ["PRESETS", "SynthConfig", "SynthConfigError", "SynthOutputError", "generate"]
