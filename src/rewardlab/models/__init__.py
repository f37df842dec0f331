"""Stage 3, models: backbones (MiniLM, any HF id/path, the from-scratch `bow`), tokenized pair
batches, and `RewardModel` (load, score, save a standard sequence-classification checkpoint)."""
