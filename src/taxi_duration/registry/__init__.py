"""Model registry: register each trained model, alias it challenger, promote to champion only if better."""
