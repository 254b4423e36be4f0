"""Training batches: reproducible from a seed, in the training process or in DataLoader
workers, and a run trains with workers."""

from itertools import islice
from pathlib import Path

import numpy as np
import pytest
import torch

from mrimaster.cli.main import main
from mrimaster.errors import ConfigError
from mrimaster.segmentation.augment import AugmentConfig, PatchAugmenter
from mrimaster.segmentation.cases import find_case
from mrimaster.segmentation.train import (
    PatchStream,
    SegTrainConfig,
    load_training_case,
    patch_batches,
)
from tests.segmentation.synthetic import write_case

PATCH = [16, 16, 16]


@pytest.fixture(scope="module")
def cases(tmp_path_factory: pytest.TempPathFactory) -> list:
    root = tmp_path_factory.mktemp("cases")
    return [load_training_case(find_case(write_case(root / name, layout, seed=seed)),
                               ["flair", "t1", "t1ce", "t2"], True)
            for name, layout, seed in (("a", "brats2021", 1), ("b", "wt", 2))]


def _cfg() -> SegTrainConfig:
    return SegTrainConfig(train_cases=["a", "b"], patch=PATCH, channels=[8, 16], batch_size=3)


def _in_process(cases: list, seed: int, n: int) -> list:
    cfg = _cfg()
    stream = patch_batches(cases, cfg, PatchAugmenter(PATCH, AugmentConfig(), seed=seed),
                           np.random.default_rng(seed))
    return list(islice(stream, n))


def _from_workers(cases: list, seed: int, n: int, workers: int) -> list:
    loader = torch.utils.data.DataLoader(PatchStream(cases, _cfg(), AugmentConfig(), seed),
                                         batch_size=None, num_workers=workers)
    return [tuple(t.numpy() for t in b) for b in islice(loader, n)]


def test_batches_have_the_documented_shapes(cases: list) -> None:
    x, y, known = _in_process(cases, 0, 1)[0]
    assert x.shape == (3, 4, *PATCH) and x.dtype == np.float32
    assert y.shape == (3, 3, *PATCH) and set(np.unique(y)) <= {0.0, 1.0}
    assert known.shape == (3, 3) and known.dtype == np.float32


def test_batches_are_reproducible_from_the_seed(cases: list) -> None:
    first, again, other = (_in_process(cases, s, 3) for s in (0, 0, 1))
    for a, b in zip(first, again, strict=True):
        assert all(np.array_equal(u, v) for u, v in zip(a, b, strict=True))
    assert not all(np.array_equal(a[0], b[0]) for a, b in zip(first, other, strict=True))


def test_workers_draw_different_batches_reproducibly(cases: list) -> None:
    first = _from_workers(cases, 0, 4, workers=2)
    again = _from_workers(cases, 0, 4, workers=2)
    for a, b in zip(first, again, strict=True):
        assert all(np.array_equal(u, v) for u, v in zip(a, b, strict=True))
    # batches 0 and 1 come from the two workers: their own generators, not copies
    assert not np.array_equal(first[0][0], first[1][0])


def test_negative_workers_are_refused() -> None:
    with pytest.raises(ConfigError, match="num_workers"):
        SegTrainConfig(train_cases=["a"], num_workers=-1)


def test_a_run_trains_with_workers(tmp_path: Path) -> None:
    write_case(tmp_path / "data" / "a", "brats2021", seed=6)
    assert main(["seg", "train", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "r"),
                 "--no-track", "--set", "train_cases=[a]", "--set", "patch=[16, 16, 16]",
                 "--set", "channels=[8, 16]", "--set", "epochs=2", "--set", "iterations=2",
                 "--set", "num_workers=1"]) == 0
    assert (tmp_path / "r" / "model.pt").is_file()
