"""Streaming scoring: landing files -> predictions, quarantine and live borough x window counts."""
