"""Training batches: the documented shapes, reproducible from a seed."""

from itertools import islice

import numpy as np
import pytest

from mrimaster.errors import ConfigError
from mrimaster.segmentation.augment import AugmentConfig, PatchAugmenter
from mrimaster.segmentation.cases import find_case
from mrimaster.segmentation.train import (
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


def _batches(cases: list, seed: int, n: int) -> list:
    cfg = _cfg()
    stream = patch_batches(cases, cfg, PatchAugmenter(PATCH, AugmentConfig(), seed=seed),
                           np.random.default_rng(seed))
    return list(islice(stream, n))


def test_batches_have_the_documented_shapes(cases: list) -> None:
    x, y, known = _batches(cases, 0, 1)[0]
    assert x.shape == (3, 4, *PATCH) and x.dtype == np.float32
    assert y.shape == (3, 3, *PATCH) and set(np.unique(y)) <= {0.0, 1.0}
    assert known.shape == (3, 3) and known.dtype == np.float32


def test_batches_are_reproducible_from_the_seed(cases: list) -> None:
    first, again, other = (_batches(cases, s, 3) for s in (0, 0, 1))
    for a, b in zip(first, again, strict=True):
        assert all(np.array_equal(u, v) for u, v in zip(a, b, strict=True))
    assert not all(np.array_equal(a[0], b[0]) for a, b in zip(first, other, strict=True))


@pytest.mark.parametrize(("field", "value", "words"), [
    ("grid", "dense", "grid 'dense' unknown"), ("precision", "fp16", "precision 'fp16' unknown"),
    ("spacing", [1.0, 0.0, 1.0], "3 positive sizes"), ("patch", [64, 60, 64], "multiples of 8"),
])
def test_a_recipe_with_a_bad_setting_is_refused_with_the_setting_named(
        field: str, value: object, words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        SegTrainConfig(train_cases=["a"], **{field: value})  # type: ignore[arg-type]
