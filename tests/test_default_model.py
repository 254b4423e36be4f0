"""The shipped default model on the project's own leakage-free held-out split: quality floor,
calibration, referral and the Grad-CAM sanity check."""

import json
from pathlib import Path

import numpy as np
import pytest

from mrimaster.data.folders import load_slices
from mrimaster.data.splits import SplitTable
from mrimaster.evaluation.metrics import classification_metrics
from mrimaster.explain.calibrate import assess_trust
from mrimaster.explain.sanity import randomization_check
from mrimaster.inference.predict import predict_probs
from mrimaster.models.checkpoint import Classifier, load_classifier, resolve_model_path
from mrimaster.settings import load_settings

MODEL_DIR = Path(__file__).resolve().parents[1] / "models" / "default"
pytestmark = pytest.mark.realdata


@pytest.fixture(scope="module")
def held_out(data_root: Path) -> tuple[Classifier, np.ndarray, np.ndarray]:
    clf = load_classifier(resolve_model_path("default", load_settings().models_dir))
    table = SplitTable.load(MODEL_DIR / "split.csv")
    test = table.indices("test")
    assert len(test) > 300
    # the held-out images share no near-duplicate group with training or validation
    seen_groups = {table.groups[i] for i in range(len(table.paths)) if table.splits[i] != "test"}
    assert not seen_groups & {table.groups[i] for i in test}
    root = data_root / "sartaj-training"
    slices = load_slices([root / table.paths[i] for i in test], [table.labels[i] for i in test],
                         clf.image_size, progress=False)
    assert not slices.skipped
    labels = np.array([clf.classes.index(lab or "") for lab in slices.labels])
    return clf, slices.images, labels


def test_default_model_macro_f1_on_held_out_split(
        held_out: tuple[Classifier, np.ndarray, np.ndarray]) -> None:
    clf, images, labels = held_out
    metrics = classification_metrics(labels, predict_probs(clf, images), clf.classes)
    assert metrics["macro_f1"] >= 0.90
    card = json.loads((MODEL_DIR / "metrics.json").read_text())
    assert card["test"]["macro_f1"] == pytest.approx(metrics["macro_f1"], abs=1e-6)


def test_default_model_is_calibrated_and_referral_halves_the_error(
        held_out: tuple[Classifier, np.ndarray, np.ndarray]) -> None:
    clf, images, labels = held_out
    assert clf.temperature != 1.0 and clf.referral is not None
    report, _ = assess_trust(clf, images, labels)
    assert report["calibration_after"]["ece"] <= 0.03
    assert report["calibration_after"]["nll"] < report["calibration_before"]["nll"]
    rc = report["risk_coverage"]
    assert rc["error_at_100"] > 0  # otherwise the next line proves nothing
    assert rc["error_at_90"] <= rc["error_at_100"] / 2


def test_default_model_gradcam_depends_on_the_weights(
        held_out: tuple[Classifier, np.ndarray, np.ndarray]) -> None:
    clf, images, _ = held_out
    report = randomization_check(clf.net, images[::27][:16])
    assert len(report["spearman"]) == 16
    assert report["mean_spearman"] < 0.5
