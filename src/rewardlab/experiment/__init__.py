"""Stage 8, the experiment: conditions × seeds with controls and statistics; the teaching demo."""
