"""``mrimaster train-brain-check``: train the "is this a brain MRI slice?" check."""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

from mrimaster.settings import Settings


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train-brain-check", help="train the brain-MRI check that runs before "
                       "the 2D classifier (real MRI of the data root against generated "
                       "non-MRI images)",
                       description="Train the brain-MRI check into a model folder. Settings "
                       "come from --config (YAML), then --set key=value overrides.")
    p.add_argument("--config", type=Path, help="YAML config (keys of BrainCheckConfig)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config key (repeatable), e.g. --set epochs=5")
    p.add_argument("--out", type=Path, help="model folder to write (default: a new run folder "
                   "under the runs folder)")
    p.add_argument("--write-shipped", action="store_true",
                   help="allow writing into the shipped models folder (models/brain-check)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    from mrimaster.config import load_config
    from mrimaster.models.paths import refuse_shipped
    from mrimaster.training.brain_check import run_train_brain_check
    from mrimaster.training.brain_check_data import BrainCheckConfig

    cfg = load_config(BrainCheckConfig, args.config, args.overrides)
    out = args.out or settings.runs_dir / f"brain-check-{time.strftime('%Y%m%d-%H%M%S')}"
    refuse_shipped(out / "weights.npz", settings.models_dir, args.write_shipped)
    command = "mrimaster " + " ".join(shlex.quote(a) for a in sys.argv[1:]) \
        if Path(sys.argv[0]).name == "mrimaster" else "mrimaster train-brain-check"
    metrics = run_train_brain_check(cfg, settings.data_root, out, command)
    print(f"brain-MRI check written to {out}: threshold {metrics['threshold']:.4f}, held-out "
          f"non-MRI rejected {100 * metrics['held_out_reject_rate']:.1f} %, report MRI "
          f"rejected {100 * metrics['mri_reject_rate_report']:.2f} %")
    return 0
