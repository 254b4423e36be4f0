import io

import numpy as np
import pytest
from PIL import Image

from mrimaster.data.hashing import (
    DEFAULT_THRESHOLD,
    group_ids,
    min_hamming,
    near_duplicate_groups,
    phash_variants,
)
from tests.conftest import synthetic_slice


def _reencode(img: np.ndarray, quality: int) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=quality)
    return np.asarray(Image.open(buf).convert("L"))


def _distance(a: np.ndarray, b: np.ndarray) -> int:
    return int(min_hamming(phash_variants(a)[None], phash_variants(b)[None])[0, 0])


@pytest.mark.parametrize("edit", ["jpeg", "resize", "pad", "hflip", "vflip", "rot90", "rot270"])
def test_edited_copies_are_near_duplicates(edit: str) -> None:
    img = synthetic_slice(7, 256)
    copy = {
        "jpeg": lambda: _reencode(img, 70),
        "resize": lambda: np.asarray(Image.fromarray(img).resize((150, 150))),
        "pad": lambda: np.pad(img, 40),
        "hflip": lambda: img[:, ::-1],
        "vflip": lambda: img[::-1],
        "rot90": lambda: np.rot90(img),
        "rot270": lambda: np.rot90(img, 3),
    }[edit]()
    assert _distance(img, np.ascontiguousarray(copy)) <= DEFAULT_THRESHOLD


def test_different_slices_are_far_apart() -> None:
    dists = [_distance(synthetic_slice(i, 256), synthetic_slice(100 + i, 256)) for i in range(5)]
    assert min(dists) > DEFAULT_THRESHOLD


def test_group_ids_are_transitive_components() -> None:
    ids = group_ids(6, np.array([[0, 1], [1, 2], [4, 5]]))
    assert list(ids) == [0, 0, 0, 3, 4, 4]


def test_near_duplicate_groups_on_images() -> None:
    a, b = synthetic_slice(1, 128), synthetic_slice(2, 128)
    hashes = np.stack([phash_variants(x) for x in (a, b, a[:, ::-1].copy(), _reencode(b, 90))])
    groups = near_duplicate_groups(hashes)
    assert groups[0] == groups[2] and groups[1] == groups[3] and groups[0] != groups[1]
