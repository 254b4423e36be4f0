"""The deep-ensemble recipe on a small synthetic dataset: one `members` config trains each
member as an ordinary run, fits the pooled rule on validation, and a second call keeps the
trained members; bad member lists are refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mrimaster.data.splits import SplitTable
from mrimaster.errors import ConfigError
from mrimaster.models.checkpoint import load_classifier
from mrimaster.settings import load_settings
from mrimaster.training.ensemble import member_configs
from mrimaster.training.train import run_training
from mrimaster.trust.ensemble import SCORES
from tests.training.test_train import _config, small_data  # noqa: F401 (fixture)


def test_recipe_trains_members_and_fits_the_pool(small_data: Path,  # noqa: F811
                                                 tmp_path: Path) -> None:
    members = [{"seed": 0}, {"seed": 1, "augment": "seed"}]
    run = run_training(_config(small_data, tmp_path / "ens", epochs=1, members=members),
                       load_settings())
    assert run == tmp_path / "ens"
    for k in (0, 1):
        assert (run / "members" / str(k) / "model.pt").is_file()
        assert (run / "members" / str(k) / "calibration.json").is_file()
    a, b = (load_classifier(run / "members" / k / "model.pt").net.state_dict()
            for k in ("0", "1"))
    assert any(not torch.equal(a[k], b[k]) for k in a)  # other seeds: other members
    report = json.loads((run / "ensemble.json").read_text())
    n_val = len(SplitTable.load(run / "members" / "0" / "split.csv").indices("val"))
    assert report["val"]["n"] == n_val and report["passes"] == 2
    assert report["score"] in SCORES and report["temperature"] > 0
    assert report["overrides"] == members
    assert 0 <= report["val"]["coverage"] <= 1
    assert (run / "risk_coverage_val.png").stat().st_size > 1000

    stamp = (run / "members" / "1" / "model.pt").stat().st_mtime_ns
    run_training(_config(small_data, tmp_path / "ens", epochs=1, members=members),
                 load_settings())
    assert (run / "members" / "1" / "model.pt").stat().st_mtime_ns == stamp  # kept


@pytest.mark.parametrize("members, says", [
    ([{"seed": 1}], "at least 2 members"),
    ([{"seed": 1}, {"colour": "blue"}], "unknown or forbidden keys"),
    ([{"seed": 1}, {"out_dir": "x"}], "unknown or forbidden keys"),
    ([{"seed": 1}, "seed=2"], "not a mapping"),
])
def test_bad_member_lists_are_refused(small_data: Path, tmp_path: Path,  # noqa: F811
                                      members: list[object], says: str) -> None:
    cfg = _config(small_data, tmp_path / "x", members=[{"seed": 0}, {"seed": 1}])
    cfg.members = members  # type: ignore[assignment]
    with pytest.raises(ConfigError, match=says):
        member_configs(cfg, tmp_path / "x")


def test_the_shipped_ensemble_recipe_is_the_default_recipe_with_members(tmp_path: Path) -> None:
    from dataclasses import replace

    from mrimaster.config import load_config
    from mrimaster.training.config import TrainConfig

    repo = Path(__file__).resolve().parents[2]
    ensemble = load_config(TrainConfig, repo / "configs" / "ensemble.yaml")
    default = load_config(TrainConfig, repo / "configs" / "default.yaml")
    members = member_configs(ensemble, tmp_path)
    assert len(members) >= 4
    assert replace(members[0], out_dir=None) == default  # member 0 is the single model
    assert len({(m.seed, m.augment, m.image_size, m.model) for m in members}) == len(members)
