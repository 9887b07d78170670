"""Training: time-based split, MLlib pipelines, metrics against a zone-pair median baseline, MLflow."""
