import pytest

from mrimaster.data.labels import CLASSES, canonical_label


@pytest.mark.parametrize("name,expected", [
    ("glioma_tumor", "glioma"), ("glioma", "glioma"), ("Meningioma_Tumor", "meningioma"),
    ("meningioma", "meningioma"), ("no_tumor", "no_tumor"), ("notumor", "no_tumor"),
    ("pituitary_tumor", "pituitary"), ("pituitary", "pituitary"), ("pituitary-tumor", "pituitary"),
])
def test_aliases_map_to_canonical(name: str, expected: str) -> None:
    assert canonical_label(name) == expected


def test_unknown_names_are_none() -> None:
    assert canonical_label("astrocytoma") is None
    assert CLASSES == ("glioma", "meningioma", "no_tumor", "pituitary")
