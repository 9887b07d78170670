"""The retraining cycle a scheduler runs: ingest new months, score, monitor, retrain when alerted, promote."""
