"""The shipped default model's quality floor on the project's own leakage-free held-out split."""

import json
from pathlib import Path

import numpy as np
import pytest

from mrimaster.data.folders import load_slices
from mrimaster.data.splits import SplitTable
from mrimaster.evaluation.metrics import classification_metrics
from mrimaster.inference.predict import predict_probs
from mrimaster.models.checkpoint import load_classifier, resolve_model_path
from mrimaster.settings import load_settings

MODEL_DIR = Path(__file__).resolve().parents[1] / "models" / "default"


@pytest.mark.realdata
def test_default_model_macro_f1_on_held_out_split(data_root: Path) -> None:
    clf = load_classifier(resolve_model_path("default", load_settings().models_dir))
    table = SplitTable.load(MODEL_DIR / "split.csv")
    test = table.indices("test")
    assert len(test) > 300
    # the held-out images share no near-duplicate group with training or validation
    train_groups = {table.groups[i] for i in range(len(table.paths)) if table.splits[i] != "test"}
    assert not train_groups & {table.groups[i] for i in test}
    root = data_root / "sartaj-training"
    slices = load_slices([root / table.paths[i] for i in test], [table.labels[i] for i in test],
                         clf.image_size, progress=False)
    assert not slices.skipped
    y = np.array([clf.classes.index(lab or "") for lab in slices.labels])
    metrics = classification_metrics(y, predict_probs(clf, slices.images), clf.classes)
    assert metrics["macro_f1"] >= 0.90
    card = json.loads((MODEL_DIR / "metrics.json").read_text())
    assert card["test"]["macro_f1"] == pytest.approx(metrics["macro_f1"], abs=1e-6)
