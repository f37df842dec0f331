"""Stage 5, evaluation: a reward model on test pairs → metrics with intervals; paired statistics."""
