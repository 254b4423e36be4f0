"""Datasets: class folders, image decoding, audit, near-duplicate hashing and splits."""
