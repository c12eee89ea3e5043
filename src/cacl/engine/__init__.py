"""Training: the CACL trainer (relabel -> train an epoch -> evaluate -> checkpoint) and its parts."""
