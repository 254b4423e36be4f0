"""The one place where class-folder names are converted to canonical labels."""

from __future__ import annotations

CLASSES: tuple[str, ...] = ("glioma", "meningioma", "no_tumor", "pituitary")
"""Canonical labels, in model-output order."""

_ALIASES: dict[str, str] = {
    "glioma": "glioma",
    "glioma_tumor": "glioma",
    "glioma_tumour": "glioma",
    "meningioma": "meningioma",
    "meningioma_tumor": "meningioma",
    "meningioma_tumour": "meningioma",
    "no_tumor": "no_tumor",
    "notumor": "no_tumor",
    "no_tumour": "no_tumor",
    "notumour": "no_tumor",
    "pituitary": "pituitary",
    "pituitary_tumor": "pituitary",
    "pituitary_tumour": "pituitary",
}


def canonical_label(folder_name: str) -> str | None:
    """Map a class-folder name to its canonical label.

    Case, spaces and hyphens are ignored (``Glioma-Tumor`` -> ``glioma``).

    Returns:
        One of :data:`CLASSES`, or ``None`` for an unknown name.
    """
    key = folder_name.strip().lower().replace("-", "_").replace(" ", "_")
    return _ALIASES.get(key)


def known_folder_names() -> list[str]:
    """All accepted folder names, for error messages."""
    return sorted(_ALIASES)
