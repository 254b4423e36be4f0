"""``mrimaster data download|audit|split|push|pull``."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from mrimaster.settings import Settings


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="download and audit datasets")
    data_sub = p.add_subparsers(dest="data_command", required=True)
    dl = data_sub.add_parser("download", help="fetch a dataset into the data root, verified")
    dl.add_argument("name", help="dataset name (sartaj)")
    dl.add_argument("--source", type=Path,
                    help="local zip or folder instead of downloading "
                    "(or env MRIMASTER_<NAME>_SOURCE)")
    dl.add_argument("--data-root", type=Path, help="override MRIMASTER_DATA_ROOT")
    dl.add_argument("--force", action="store_true", help="replace an existing copy")
    dl.set_defaults(handler=run_download)
    au = data_sub.add_parser("audit", help="counts, sizes, duplicates and leakage of a dataset")
    au.add_argument("folder", type=Path, help="class-per-folder dataset")
    au.add_argument("--against", type=Path, help="second folder to check for leakage")
    au.add_argument("--out", type=Path, help="folder for audit.json and audit.md")
    au.add_argument("--threshold", type=int, help="near-duplicate Hamming threshold (of 256)")
    au.add_argument("--json", action="store_true", help="print JSON instead of the report")
    au.set_defaults(handler=run_audit)
    sp = data_sub.add_parser("split", help="leakage-free split of a dataset, saved as a file "
                             "that training configs point at")
    sp.add_argument("folder", type=Path, help="class-per-folder or presence-only dataset")
    sp.add_argument("--out", type=Path, required=True, help="split CSV to write")
    sp.add_argument("--threshold", type=int, help="near-duplicate Hamming threshold (of 256)")
    sp.add_argument("--seed", type=int, default=0)
    sp.add_argument("--clusters", type=int, help="acquisition-style clusters (0: no shift part)")
    sp.set_defaults(handler=run_split)
    pu = data_sub.add_parser("push", help="upload a folder to s3://bucket/prefix (checksummed, "
                             "resumable: identical files are skipped)")
    pu.add_argument("folder", type=Path)
    pu.add_argument("url", help="s3://bucket/prefix")
    pu.set_defaults(handler=run_push)
    pl = data_sub.add_parser("pull", help="download s3://bucket/prefix into a folder "
                             "(each file verified against its SHA-256)")
    pl.add_argument("url", help="s3://bucket/prefix")
    pl.add_argument("folder", type=Path)
    pl.set_defaults(handler=run_pull)


def run_push(args: argparse.Namespace, settings: Settings) -> int:
    from mrimaster.data.s3sync import push

    r = push(args.folder, args.url, progress=sys.stderr.isatty())
    print(f"pushed {len(r.copied)} files ({r.bytes / 1e6:.1f} MB), {len(r.skipped)} already "
          f"there, to {args.url}")
    return 0


def run_pull(args: argparse.Namespace, settings: Settings) -> int:
    from mrimaster.data.s3sync import pull

    r = pull(args.url, args.folder, progress=sys.stderr.isatty())
    print(f"pulled {len(r.copied)} files ({r.bytes / 1e6:.1f} MB), {len(r.skipped)} already "
          f"here, into {args.folder}")
    return 0


def run_download(args: argparse.Namespace, settings: Settings) -> int:
    from mrimaster.data.download import download_dataset

    source = args.source or os.environ.get(f"MRIMASTER_{args.name.upper()}_SOURCE")
    target = download_dataset(args.name, args.data_root or settings.data_root,
                              Path(source) if source else None, args.force)
    print(f"{args.name}: {target}")
    return 0


def run_audit(args: argparse.Namespace, settings: Settings) -> int:
    import json

    from mrimaster.data.audit import format_audit, run_audit, write_audit
    from mrimaster.data.hashing import DEFAULT_THRESHOLD

    report = run_audit(args.folder, args.against, args.threshold or DEFAULT_THRESHOLD,
                       progress=sys.stderr.isatty(),
                       figure=args.out / "pair_distances.png" if args.out else None)
    if args.out:
        json_path, md_path = write_audit(report, args.out)
        print(f"wrote {json_path} and {md_path}", file=sys.stderr)
    print(json.dumps(report, indent=2) if args.json else format_audit(report))
    return 0


def run_split(args: argparse.Namespace, settings: Settings) -> int:
    import json

    from mrimaster.data.splits import SplitConfig, make_split

    cfg = SplitConfig(seed=args.seed)
    if args.threshold is not None:
        cfg.threshold = args.threshold
    if args.clusters is not None:
        cfg.style_clusters = args.clusters
    table, info = make_split(args.folder, cfg, progress=sys.stderr.isatty())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    table.save(args.out)
    info_path = args.out.with_suffix(".json")
    info_path.write_text(json.dumps(info, indent=2))
    for part, counts in info["parts"].items():
        print(f"{part:>7}: {sum(counts.values()):5d}  " + ", ".join(
            f"{k} {v}" for k, v in sorted(counts.items())))
    print(f"wrote {args.out} and {info_path}", file=sys.stderr)
    return 0
