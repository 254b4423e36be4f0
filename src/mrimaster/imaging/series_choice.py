"""Which of a study's series the imaging stage uses: the model's needs checked before any series
is read, each chosen series vetted as loaded (:func:`vet_sequences`), then the reference chosen
(:func:`choose_reference`, by :data:`REFERENCE_ORDER`). Messages name every series and what
became of it (:func:`found`, :func:`no_flair`). Used by
:func:`mrimaster.imaging.prepare.prepare_study`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import nibabel as nib

from mrimaster.errors import DataError
from mrimaster.imaging.inputs import ROLE_NAMES, Sequence

REFERENCE_ORDER = ("t1ce", "flair", "t2", "t1")
"""The reference sequence: the first of these that the study has."""


def found(listing: list[dict[str, Any]]) -> str:
    """Each series and what became of it: its role, or why it could not be used (a series
    whose role was recognised but that could not be converted says both)."""
    def what(e: dict[str, Any]) -> str:
        if e.get("reason"):
            role = e.get("role")
            return f"{ROLE_NAMES[role]}, not usable: {e['reason']}" if role else e["reason"]
        if e.get("not_used"):
            role = ROLE_NAMES.get(str(e.get("role")))
            return f"{role}, not used: {e['not_used']}" if role else f"not used: {e['not_used']}"
        return str(e.get("role") or e.get("kind"))

    return "; ".join(f"{e.get('description') or e.get('file')}: {what(e)}"
                     for e in listing) or "nothing"


def series_name(entry: dict[str, Any]) -> str:
    """How messages name a series entry: its description (or file) and number."""
    number = entry.get("series_number")
    return repr(entry.get("description") or entry.get("file") or "unnamed series") + (
        f" (series {number})" if number is not None else "")


def no_flair(listing: list[dict[str, Any]],
             name: Callable[[dict[str, Any]], str] = series_name,
             listed: Callable[[list[dict[str, Any]]], str] = found) -> tuple[str, str]:
    """The message and hint for a study without a usable FLAIR: a FLAIR that is there but
    could not be converted (a missing or duplicated slice, no geometry) is named with its
    reason first, since adding a FLAIR or setting a role would not help.

    Args:
        listing: The series entries (``role``, ``reason``, ``description``, ...).
        name: Names one entry (the web app's: without the removed description).
        listed: Lists the other entries.
    """
    damaged = [e for e in listing if e.get("role") == "flair" and e.get("reason")]
    if not damaged:
        return (f"the study has no FLAIR series (found: {listed(listing)})",
                "add the FLAIR series; if one is there under another name, set its role to "
                "FLAIR")
    e = damaged[0]
    others = [x for x in listing if x is not e]
    return (f"the FLAIR series {name(e)} cannot be used: {e['reason']} (other series: "
            f"{listed(others)})", "export the FLAIR series again, complete, from the scanner "
            "or the PACS")


def choose_reference(chosen: dict[str, Sequence], listing: list[dict[str, Any]],
                      accept: Callable[[list[str]], None] | None) -> Sequence:
    """The reference sequence (the first of :data:`REFERENCE_ORDER` the study has).

    Raises:
        DataError: no usable FLAIR (:func:`no_flair`), or a series the model needs is missing
            (``accept``'s refusal, with every series found).
    """
    if "flair" not in chosen:
        raise DataError(*no_flair(listing))
    if accept is not None:
        try:
            accept(sorted(chosen))
        except DataError as exc:
            raise DataError(f"{exc.message} (series found: {found(listing)})",
                            "add the missing series; if one is there under another name, set "
                            "its role") from exc
    for role in REFERENCE_ORDER:
        if role in chosen:
            return chosen[role]
    raise DataError(f"no FLAIR, T1, T1-Gd or T2 series (found: {found(listing)})",
                    "give the study's structural series")


def vet_sequences(chosen: dict[str, Sequence], images: dict[str, nib.Nifti1Image],
         listing: list[dict[str, Any]],
         vet: Callable[[str, nib.Nifti1Image], dict[str, Any]] | None
         ) -> tuple[dict[str, Any], dict[str, tuple[str, str, dict[str, Any] | None]]]:
    """Each chosen sequence judged by ``vet`` (see
    :func:`~mrimaster.imaging.prepare.prepare_study`), before the
    reference is chosen.

    A refused FLAIR (which every model needs) refuses the study; any other refused sequence is
    left out (removed from ``chosen`` and ``images``; its ``listing`` entry says why), as a
    sequence that cannot be registered is, and the reference is chosen among the rest.

    Returns:
        ``({role: what vet returned}, {role left out: (its name, why, the figures the refusal
        carries, if any)})``.

    Raises:
        DataError: the FLAIR refused.
    """
    vetted: dict[str, Any] = {}
    left_out: dict[str, tuple[str, str, dict[str, Any] | None]] = {}
    if vet is None:
        return vetted, left_out
    for role, seq in list(chosen.items()):
        try:
            vetted[role] = vet(f"the {ROLE_NAMES[role]} ({seq.name})", images[role])
        except DataError as exc:
            if role == "flair":
                raise
            left_out[role] = (seq.name, exc.message, getattr(exc, "figures", None))
            del chosen[role], images[role]
            for entry in listing:
                if entry.get("used_as") == role:
                    del entry["used_as"]
                    entry["not_used"] = exc.message
    return vetted, left_out
