"""Run folders and checkpoints: the layer that training (:mod:`cacl.engine`) writes and
inference, the report and the command line read.

- :mod:`cacl.checkpoints.io`: atomic writes, safe (``weights_only``) reads, run folder -> file;
- :mod:`cacl.checkpoints.network`: the trained network of a checkpoint, in eval mode;
- :mod:`cacl.checkpoints.run_dir`: a run folder's config, log, TensorBoard scalars, results.
"""
