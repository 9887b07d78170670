"""Data quality: every row is either a clean trip or quarantined with a reason."""
