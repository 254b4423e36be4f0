import numpy as np
import pytest

from mrimaster.errors import DataError
from mrimaster.segmentation.labels import regions_to_brats2021, to_regions

# one voxel per label value: background, then the convention's labels
HAND = {
    "brats2015": ([0, 1, 2, 3, 4], {"WT": [0, 1, 1, 1, 1], "TC": [0, 1, 0, 1, 1],
                                    "ET": [0, 0, 0, 0, 1]}),
    "brats2021": ([0, 1, 2, 4], {"WT": [0, 1, 1, 1], "TC": [0, 1, 0, 1], "ET": [0, 0, 0, 1]}),
    "msd": ([0, 1, 2, 3], {"WT": [0, 1, 1, 1], "TC": [0, 0, 1, 1], "ET": [0, 0, 0, 1]}),
    "brats2023": ([0, 1, 2, 3], {"WT": [0, 1, 1, 1], "TC": [0, 1, 0, 1], "ET": [0, 0, 0, 1]}),
}


@pytest.mark.parametrize("convention", list(HAND))
def test_conventions_against_hand_made_maps(convention: str) -> None:
    values, expected = HAND[convention]
    labels = np.array(values, dtype=np.float32).reshape(1, 1, -1)
    regions, known = to_regions(labels, convention)
    assert known.all()
    for i, name in enumerate(("WT", "TC", "ET")):
        assert regions[i].ravel().astype(int).tolist() == expected[name]


def test_whole_tumour_only_convention() -> None:
    regions, known = to_regions(np.array([[[0, 1, 1]]]), "wt")
    assert known.tolist() == [True, False, False]
    assert regions[0].ravel().tolist() == [False, True, True] and not regions[1:].any()


def test_unexpected_values_are_rejected() -> None:
    with pytest.raises(DataError, match=r"label values \[3\] are not part of the brats2021"):
        to_regions(np.array([[[0, 3]]]), "brats2021")
    with pytest.raises(DataError, match="unknown label convention"):
        to_regions(np.zeros((1, 1, 1)), "brats1999")


@pytest.mark.parametrize("convention", list(HAND))
def test_round_trip_to_brats2021(convention: str) -> None:
    values, _ = HAND[convention]
    regions, _ = to_regions(np.array(values).reshape(1, 1, -1), convention)
    back = regions_to_brats2021(regions)
    again, _ = to_regions(back, "brats2021")
    assert np.array_equal(regions, again)
    assert set(np.unique(back)) <= {0, 1, 2, 4}
