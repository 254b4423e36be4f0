"""Dataset audit: counts, sizes, modes, exact and near duplicates, leakage between two folders."""

from __future__ import annotations

import hashlib
import json
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm import tqdm

from mrimaster.data.audit_figures import plot_pair_distances
from mrimaster.data.folders import FolderScan, scan_class_folders
from mrimaster.data.hashing import DEFAULT_THRESHOLD, group_ids, min_hamming, phash_variants
from mrimaster.data.images import load_grayscale
from mrimaster.errors import ImageLoadError


def _describe(scan: FolderScan, progress: bool) -> dict[str, Any]:
    """Decode every file once: sha256, size, mode, pHash; unreadable files are listed."""
    rows: list[dict[str, Any]] = []
    unreadable = []
    for path, label in tqdm(list(zip(scan.paths, scan.labels, strict=True)), desc="auditing",
                            unit="img", disable=None if progress else True, leave=False):
        try:
            gray = load_grayscale(path)
            with Image.open(path) as im:
                size, mode, fmt = im.size, im.mode, im.format
        except ImageLoadError as exc:
            unreadable.append({"path": str(path), "reason": exc.message})
            continue
        rows.append({"path": path, "label": label, "sha256": hashlib.sha256(path.read_bytes())
                     .hexdigest(), "size": size, "mode": mode, "format": fmt,
                     "hash": phash_variants(gray)})
    return {"rows": rows, "unreadable": unreadable}


def _groups_summary(members: list[list[int]], rows: list[dict[str, Any]], root: Path,
                    list_limit: int) -> dict[str, Any]:
    multi = [m for m in members if len(m) > 1]
    cross = [m for m in multi if len({rows[i]["label"] for i in m}) > 1]
    return {
        "groups": len(multi),
        "files": sum(len(m) for m in multi),
        "redundant": sum(len(m) - 1 for m in multi),
        "largest": max((len(m) for m in multi), default=0),
        "cross_class_groups": len(cross),
        "list": [[str(rows[i]["path"].relative_to(root)) for i in m]
                 for m in sorted(multi, key=len, reverse=True)[:list_limit]],
    }


def _members(ids: list[Any]) -> list[list[int]]:
    by_id: dict[Any, list[int]] = defaultdict(list)
    for i, key in enumerate(ids):
        by_id[key].append(i)
    return list(by_id.values())


def audit_folder(root: Path, threshold: int = DEFAULT_THRESHOLD, progress: bool = True,
                 list_limit: int = 50) -> tuple[dict[str, Any], dict[str, Any]]:
    """Audit one class-per-folder dataset.

    Returns:
        ``(report, internals)``: the JSON-ready report and the per-file rows (for ``--against``).
    """
    scan = scan_class_folders(root)
    described = _describe(scan, progress)
    rows = described["rows"]
    hashes = np.stack([r["hash"] for r in rows])
    exact = _members([r["sha256"] for r in rows])
    dist = min_hamming(hashes, hashes)
    dist = np.minimum(dist, dist.T)
    i, j = np.nonzero(np.triu(dist <= threshold, k=1))
    near = _members(list(group_ids(len(rows), np.stack([i, j], axis=1))))
    exact_dup = {i for m in exact if len(m) > 1 for i in m}
    near_dup = {i for m in near if len(m) > 1 for i in m}
    sizes = Counter(r["size"] for r in rows)
    group_of = {k: g for g, members in enumerate(near) for k in members}
    per_class: dict[str, dict[str, int]] = {}
    for label in sorted({r["label"] for r in rows}):
        idx = [k for k, r in enumerate(rows) if r["label"] == label]
        per_class[label] = {
            "images": len(idx),
            "in_exact_duplicate_groups": sum(k in exact_dup for k in idx),
            "in_near_duplicate_groups": sum(k in near_dup for k in idx),
            "distinct_after_near_dedup": len({group_of[k] for k in idx}),
        }
    report = {
        "folder": str(root),
        "files_found": len(scan.paths),
        "images": len(rows),
        "class_counts": dict(Counter(r["label"] for r in rows)),
        "sizes": {
            "distinct": len(sizes),
            "most_common": [[w, h, n] for (w, h), n in sizes.most_common(5)],
            "min_side": min(min(s) for s in sizes),
            "max_side": max(max(s) for s in sizes),
        },
        "modes": dict(Counter(r["mode"] for r in rows)),
        "formats": dict(Counter(r["format"] for r in rows)),
        "unreadable": described["unreadable"],
        "skipped": [{"path": str(s.path), "reason": s.reason} for s in scan.skipped],
        "exact_duplicates": _groups_summary(exact, rows, root, list_limit),
        "near_duplicates": {"threshold_bits": threshold, "hash_bits": int(hashes.shape[2] * 64),
                            **_groups_summary(near, rows, root, list_limit)},
        "per_class": per_class,
    }
    return report, {"rows": rows, "hashes": hashes, "dist": dist}


def run_audit(root: Path, against: Path | None = None, threshold: int = DEFAULT_THRESHOLD,
              progress: bool = True, figure: Path | None = None) -> dict[str, Any]:
    """Audit ``root`` and, with ``against``, the second folder and the leakage between them.

    Args:
        figure: Where to write the near-duplicate distance figure of ``root``
            (:mod:`mrimaster.data.audit_figures`), if anywhere.

    Returns:
        The report (see ``audit.json`` in the README for its fields).
    """
    report, inner = audit_folder(root, threshold, progress)
    if figure is not None:
        figure.parent.mkdir(parents=True, exist_ok=True)
        plot_pair_distances([r["path"] for r in inner["rows"]],
                            [r["label"] for r in inner["rows"]], inner["dist"], threshold,
                            figure)
        report["figure"] = str(figure)
    if against is None:
        return report
    other, other_inner = audit_folder(against, threshold, progress)
    rows_a, rows_b = inner["rows"], other_inner["rows"]
    sha_b = defaultdict(list)
    for k, r in enumerate(rows_b):
        sha_b[r["sha256"]].append(k)
    exact_pairs = [(a, b) for a, r in enumerate(rows_a) for b in sha_b.get(r["sha256"], [])]
    dist = np.minimum(min_hamming(inner["hashes"], other_inner["hashes"]),
                      min_hamming(other_inner["hashes"], inner["hashes"]).T)
    near_a, near_b = np.nonzero(dist <= threshold)

    def rel(rows: list[dict[str, Any]], base: Path, k: int) -> str:
        return str(rows[k]["path"].relative_to(base))

    report = {
        "folder": report,
        "against": other,
        "leakage": {
            "threshold_bits": threshold,
            "exact_pairs": len(exact_pairs),
            "near_pairs": int(near_a.size),
            "files_in_folder_with_copy_in_against": int(np.unique(near_a).size),
            "files_in_against_with_copy_in_folder": int(np.unique(near_b).size),
            "label_disagreements": int(sum(rows_a[a]["label"] != rows_b[b]["label"]
                                           for a, b in zip(near_a, near_b, strict=True))),
            "exact_list": [[rel(rows_a, root, a), rel(rows_b, against, b)]
                           for a, b in exact_pairs[:50]],
            "near_list": [[rel(rows_a, root, int(a)), rel(rows_b, against, int(b)),
                           int(dist[a, b])]
                          for a, b in list(zip(near_a, near_b, strict=True))[:50]],
        },
    }
    return report


def _folder_lines(rep: dict[str, Any]) -> list[str]:
    ex, near = rep["exact_duplicates"], rep["near_duplicates"]
    lines = [f"# Audit of {rep['folder']}", "",
             f"- images: {rep['images']} (files found {rep['files_found']}, "
             f"unreadable {len(rep['unreadable'])}, skipped {len(rep['skipped'])})",
             f"- sizes: {rep['sizes']['distinct']} distinct, sides {rep['sizes']['min_side']}"
             f"-{rep['sizes']['max_side']} px; most common "
             + ", ".join(f"{w}x{h} ({n})" for w, h, n in rep["sizes"]["most_common"]),
             f"- modes: {rep['modes']}; formats: {rep['formats']}",
             f"- exact duplicates: {ex['groups']} groups, {ex['files']} files, "
             f"{ex['redundant']} redundant copies, {ex['cross_class_groups']} groups across "
             "classes",
             f"- near duplicates (<= {near['threshold_bits']} of {near['hash_bits']} bits): "
             f"{near['groups']} groups, {near['files']} files, largest {near['largest']}, "
             f"{near['cross_class_groups']} groups across classes", "",
             "| class | images | in exact-dup groups | in near-dup groups | distinct |",
             "|---|---:|---:|---:|---:|"]
    for label, c in rep["per_class"].items():
        lines.append(f"| {label} | {c['images']} | {c['in_exact_duplicate_groups']} | "
                     f"{c['in_near_duplicate_groups']} | {c['distinct_after_near_dedup']} |")
    for item in rep["unreadable"] + rep["skipped"]:
        lines.append(f"- skipped {item['path']}: {item['reason']}")
    if rep.get("figure"):
        lines += ["", "How the near-duplicate threshold was chosen (example pairs per distance "
                  "band):", "", f"![near-duplicate distances]({Path(rep['figure']).name})"]
    return lines


def format_audit(report: dict[str, Any]) -> str:
    """A readable markdown rendering of :func:`run_audit`'s report."""
    if "leakage" not in report:
        return "\n".join(_folder_lines(report)) + "\n"
    leak = report["leakage"]
    lines = _folder_lines(report["folder"]) + [""] + _folder_lines(report["against"]) + [
        "", "# Leakage between the two folders", "",
        f"- exact copies: {leak['exact_pairs']} pairs",
        f"- near copies: {leak['near_pairs']} pairs; {leak['files_in_folder_with_copy_in_against']}"
        f" files of the first folder and {leak['files_in_against_with_copy_in_folder']} of the "
        f"second have a copy on the other side; {leak['label_disagreements']} pairs disagree on "
        "the label"]
    return "\n".join(lines) + "\n"


def write_audit(report: dict[str, Any], out_dir: Path) -> tuple[Path, Path]:
    """Write ``audit.json`` and ``audit.md`` into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out_dir / "audit.json", out_dir / "audit.md"
    json_path.write_text(json.dumps(report, indent=2))
    md_path.write_text(format_audit(report))
    return json_path, md_path
