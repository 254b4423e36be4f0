from pathlib import Path

import pytest

from mrimaster.config import load_config
from mrimaster.errors import ConfigError
from mrimaster.training.config import TrainConfig


def test_file_then_overrides_then_flags(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("model: mri-cnn\npretrained: false\nepochs: 3\nlr: 0.01\n")
    cfg = load_config(TrainConfig, path, ["epochs=5", "freeze=[a., b.]", "data_dir=/x"],
                      batch_size=7)
    assert (cfg.model, cfg.epochs, cfg.lr, cfg.batch_size) == ("mri-cnn", 5, 0.01, 7)
    assert cfg.freeze == ["a.", "b."] and cfg.data_dir == Path("/x")
    assert cfg.image_size == 224  # the model's default


@pytest.mark.parametrize("override,message", [
    (["epoch=3"], "unknown config key"),
    (["epochs=three"], "not a valid int"),
    (["pretrained=maybe"], "not a valid bool"),
    (["model=resnet"], "unknown model"),
    (["model=seed-cnn"], "has no pretrained weights"),
    (["epochs"], "key=value"),
])
def test_bad_config_is_a_clear_error(override: list[str], message: str) -> None:
    with pytest.raises(ConfigError if "model" not in message else Exception, match=message):
        load_config(TrainConfig, None, override)
