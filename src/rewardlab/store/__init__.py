"""Stage 2, the store: datasets, examples, detector runs, flags, reviews, experiments (SQLAlchemy)."""
