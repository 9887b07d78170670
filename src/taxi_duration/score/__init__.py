"""Batch scoring of trips with a registered model."""
