"""Training: trainer loop, schedules, checkpoints, metrics."""
