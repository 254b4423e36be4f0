"""Batch prediction over a large folder or S3 prefix, fanned out with Metaflow's ``foreach``:
each branch classifies one shard of the images, the join writes one CSV with every trust field.

    python -m mrimaster.flows.predict_flow run --inputs FOLDER_OR_S3_PREFIX --out preds.csv \\
        [--model default] [--shard-size 256]
"""

from __future__ import annotations

import csv
import tempfile
from pathlib import Path
from typing import Any

from metaflow import FlowSpec, Parameter, step


def list_inputs(inputs: str) -> list[str]:
    """Image files under a folder (recursively) or the object keys under an ``s3://`` prefix."""
    if inputs.startswith("s3://"):
        import boto3

        from mrimaster.data.s3sync import parse_s3_url

        bucket, prefix = parse_s3_url(inputs)
        keys: list[str] = []
        for page in boto3.client("s3").get_paginator("list_objects_v2").paginate(
                Bucket=bucket, Prefix=f"{prefix}/" if prefix else ""):
            keys += [f"s3://{bucket}/{o['Key']}" for o in page.get("Contents", [])]
        return sorted(keys)
    from mrimaster.data.folders import collect_image_paths

    paths, _ = collect_image_paths([Path(inputs)])
    return [str(p) for p in paths]


class PredictFlow(FlowSpec):
    """start (list, shard) -> predict (foreach shard) -> join (one CSV) -> end."""

    inputs = Parameter("inputs", help="folder or s3://bucket/prefix", required=True)
    out = Parameter("out", help="CSV to write", required=True)
    model = Parameter("model", help="model reference", default="default")
    shard_size = Parameter("shard-size", help="images per branch", default=256, type=int)

    @step
    def start(self) -> None:
        items = list_inputs(self.inputs)
        if not items:
            raise ValueError(f"no image under {self.inputs}")
        self.shards = [items[i:i + self.shard_size]
                       for i in range(0, len(items), self.shard_size)]
        self.next(self.predict, foreach="shards")

    @step
    def predict(self) -> None:
        from mrimaster.api import Classifier

        shard: list[str] = self.input
        with tempfile.TemporaryDirectory(prefix="mrimaster-shard-") as tmp:
            local = []
            for i, item in enumerate(shard):
                if item.startswith("s3://"):
                    import boto3

                    from mrimaster.data.s3sync import parse_s3_url

                    bucket, key = parse_s3_url(item)
                    target = Path(tmp) / f"{i:06d}{Path(key).suffix}"
                    boto3.client("s3").download_file(bucket, key, str(target))
                    local.append((item, target))
                else:
                    local.append((item, Path(item)))
            clf = Classifier.load(self.model)
            found = {p.path: p for p in clf.predict([p for _, p in local])}
        self.rows: list[dict[str, Any]] = []
        for source, path in local:
            p = found.get(str(path))
            if p is None:
                self.rows.append({"input": source, "status": "error",
                                  "reason": "not an image that can be read"})
                continue
            row = {"input": source, "status": p.status, "reason": p.reason, "label": p.label,
                   "confidence": p.confidence, "uncertainty": p.uncertainty,
                   "distance": p.distance}
            row.update({f"p_{c}": (p.probabilities or {}).get(c) for c in clf.classes})
            self.rows.append(row)
        self.next(self.join)

    @step
    def join(self, branches: Any) -> None:
        rows = [r for b in branches for r in b.rows]
        keys = sorted({k for r in rows for k in r}, key=lambda k: (k != "input", k))
        Path(self.out).parent.mkdir(parents=True, exist_ok=True)
        with open(self.out, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=keys)
            writer.writeheader()
            writer.writerows(rows)
        self.count = len(rows)
        self.referred = sum(r["status"] != "ok" for r in rows)
        self.next(self.end)

    @step
    def end(self) -> None:
        print(f"{self.count} images, {self.referred} referred or rejected -> {self.out}")


if __name__ == "__main__":
    PredictFlow()
