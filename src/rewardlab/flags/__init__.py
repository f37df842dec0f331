"""Stage 6, flags: detectors (rule and model-based) run over a stored dataset, and the training-set
selection their flags drive (all | clean | random control; remove, flip, soft)."""
