"""Trust: calibration, uncertainty, out-of-distribution checks and referral."""
