"""Command-line interface: thin shells over the stage functions."""
