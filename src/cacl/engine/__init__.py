"""Training engine: checkpoints, feature extraction passes and the CACL trainer."""
