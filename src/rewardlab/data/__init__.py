"""Stage 1, data: the one pair type, file formats, sources (files, hub, synthetic) → `SourceResult`."""
