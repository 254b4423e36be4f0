"""Inference: batched prediction with a loaded classifier."""
