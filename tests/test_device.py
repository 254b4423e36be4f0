"""Choosing where inference runs: ``--device auto|cpu|cuda`` on every inference command."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from mrimaster.cli.main import main
from mrimaster.device import inference_device
from mrimaster.errors import ConfigError
from tests.conftest import synthetic_slice

HAS_GPU = inference_device("auto") == "cuda"


def test_auto_is_the_cpu_without_a_gpu_and_names_are_checked() -> None:
    assert inference_device("cpu") == "cpu"
    assert inference_device("auto") in ("cpu", "cuda")
    with pytest.raises(ConfigError, match="unknown device"):
        inference_device("tpu")


@pytest.mark.skipif(HAS_GPU, reason="checks the message on machines without a GPU")
def test_cuda_without_a_gpu_is_a_clear_error(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    image = tmp_path / "slice.png"
    Image.fromarray(synthetic_slice(1, 128)).save(image)
    assert main(["predict", "--device", "cuda", str(image)]) == 2
    assert "no CUDA GPU" in capsys.readouterr().err


@pytest.mark.parametrize("command", [
    ["predict", "--runtime", "torch"],
    pytest.param(["explain", "--out", "{out}"], marks=pytest.mark.realdata)])
def test_inference_commands_run_on_the_cpu_when_asked(
        tmp_path: Path, command: list[str], capsys: pytest.CaptureFixture[str],
        request: pytest.FixtureRequest) -> None:
    image = tmp_path / "slice.png"
    Image.fromarray(synthetic_slice(2, 128)).save(image)
    if command[0] == "explain":  # a real slice: no map for one predict rejects (synthetic)
        data_root = request.getfixturevalue("data_root")
        image = sorted((data_root / "sartaj-training" / "glioma_tumor").glob("*.jpg"))[0]
    args = [a.replace("{out}", str(tmp_path / "out")) for a in command]
    assert main([*args, "--device", "cpu", str(image)]) == 0
    assert capsys.readouterr().out
