"""Stage 4, training: `TrainConfig` → `train_reward_model` (Bradley-Terry, accelerate, resumable
checkpoints). Speed tricks live in `training.fast`, behind one call."""
