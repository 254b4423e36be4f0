"""Imaging: reading scanner series and deciding what each one is."""
