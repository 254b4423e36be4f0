"""Explanations and trust: class activation maps, calibration, referral."""
