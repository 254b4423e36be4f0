"""MRIMaster: a brain-MRI assistant (classification, explanation, segmentation)."""

__version__ = "0.1.0"
