"""The web layer: `rewardlab serve` (reward model over HTTP) and `rewardlab review` (browser review)."""
