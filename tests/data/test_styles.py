import numpy as np

from mrimaster.data.styles import STYLE_FEATURES, kmeans, style_features


def test_style_features_by_hand() -> None:
    img = np.zeros((64, 128), np.uint8)
    img[16:48, 32:96] = 100
    f = dict(zip(STYLE_FEATURES, style_features(img), strict=True))
    assert f["log2_height"] == 6 and f["log2_width"] == 7 and f["aspect"] == 2
    assert f["background_share"] == 0.75 and f["box_share"] == 0.25
    assert f["q10"] == f["q90"] == 100 / 255


def test_kmeans_finds_separated_clusters_reproducibly() -> None:
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(0, 1, (60, 3)), rng.normal(10, 1, (30, 3))])
    a = kmeans(x, 2, seed=1)
    assert np.array_equal(a, kmeans(x, 2, seed=1))
    assert set(a[:60]) == {0} and set(a[60:]) == {1}  # numbered by decreasing size
