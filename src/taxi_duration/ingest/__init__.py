"""Ingest: detect each file's format, normalise to the canonical trip schema, apply the quality rules."""
