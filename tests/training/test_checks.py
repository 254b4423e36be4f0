"""The run's checks and calibration on a tiny trained run (synthetic data)."""

import json
from pathlib import Path

import numpy as np
import pytest

from mrimaster.errors import ModelError
from mrimaster.settings import load_settings
from mrimaster.training.checks import ood_probes
from mrimaster.training.fit_trust import CalibrateConfig, run_calibration


def test_probes_include_photos_noise_blank_and_a_single_pixel() -> None:
    probes = ood_probes()
    assert {"uniform_noise_gray", "blank_black", "blank_1x1", "skimage_astronaut",
            "skimage_camera"} <= set(probes)
    for img in probes.values():
        assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3
    assert probes["blank_1x1"].shape == (1, 1, 3)


def test_trained_run_has_checks_and_a_fitted_trust_rule(trained: tuple[Path, Path]) -> None:
    from mrimaster.models.checkpoint import load_classifier

    _, run = trained
    checks = json.loads((run / "checks.json").read_text())
    assert checks["in_source"]["n"] == len([1 for line in (run / "split.csv").read_text()
                                            .splitlines() if line.endswith(",test,-1")])
    assert sum(checks["ood"]["status"].values()) == checks["ood"]["n"]
    assert {"forward_ms_per_image", "assess_ms_per_image"} <= set(checks["cost"])
    clf = load_classifier(run / "model.pt")
    assert clf.ood is not None and clf.ood["reject_above"] > clf.ood["refer_above"] > 0
    # the default rule's temperature, shipped as fitted (no floor at 1)
    cal = json.loads((run / "calibration.json").read_text())
    assert clf.temperature == cal["temperature"] == cal["temperature_shift_aware"] > 0


def test_calibrate_refuses_to_rewrite_the_shipped_model() -> None:
    with pytest.raises(ModelError, match="shipped default"):
        run_calibration(CalibrateConfig("default"), load_settings())


def test_calibrate_refuses_the_shipped_folder_by_path_too() -> None:
    settings = load_settings()
    with pytest.raises(ModelError, match="--write-shipped"):
        run_calibration(CalibrateConfig(str(settings.models_dir / "default")), settings)


def test_calibrate_and_checks_find_a_dataset_named_relative_to_the_data_root(
        trained: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run configs store the dataset relative to the data root; every stage resolves it there,
    not against the current folder."""
    import dataclasses
    import shutil

    import yaml

    from mrimaster.training.checks import run_checks

    data, run = trained
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    cfg = yaml.safe_load((copy / "config.yaml").read_text())
    cfg["data_dir"] = data.name
    (copy / "config.yaml").write_text(yaml.safe_dump(cfg))
    settings = dataclasses.replace(load_settings(), data_root=data.parent)
    monkeypatch.chdir(tmp_path)  # no folder named like the dataset here
    report = run_calibration(CalibrateConfig(str(copy)), settings)
    assert report["n_val"] > 0
    # the report gives selection with guaranteed risk's choice; with that rule it is the one used
    sgr = report["sgr"]
    assert sgr["bound"] < sgr["target_risk"] or sgr["threshold"] == -1.0
    assert report["referral"]["rule"] == "empirical"
    again = run_calibration(CalibrateConfig(str(copy), threshold_rule="sgr"), settings)
    assert again["referral"]["threshold"] == sgr["threshold"]
    assert again["referral"]["rule"] == "sgr"
    assert run_checks(copy, settings)["in_source"]["n"] > 0
