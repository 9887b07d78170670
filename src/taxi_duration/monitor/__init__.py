"""Monitoring: drift of features, target and prediction, the champion's realised error, quality drift."""
