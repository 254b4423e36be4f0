"""Training: config, data pipeline, the loop, checkpoints and tracking."""
