"""The NumPy sliding window reproduces MONAI's Gaussian sliding-window inference."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data.utils import compute_importance_map
from monai.inferers import sliding_window_inference

from mrimaster.segmentation.sliding_window import (
    GRIDS,
    gaussian_importance,
    patch_starts,
    scan_interval,
    sliding_window,
)


@pytest.mark.parametrize("patch", [(8, 8), (6, 10), (8, 8, 8), (5, 6, 7)])
def test_importance_map_is_monai_s(patch: tuple[int, ...]) -> None:
    want = compute_importance_map(patch, mode="gaussian", sigma_scale=0.125).numpy()
    np.testing.assert_allclose(gaussian_importance(patch), want, rtol=1e-6, atol=1e-7)


def _numpy_net(x: np.ndarray) -> np.ndarray:
    """A position-dependent 'network': each patch's output depends on the whole patch."""
    mean = x.mean(axis=tuple(range(2, x.ndim)), keepdims=True)
    return np.concatenate([x[:, :1] * 2 + mean[:, :1], x[:, -1:] - mean[:, -1:]], axis=1)


def _torch_net(x: torch.Tensor) -> torch.Tensor:
    return torch.from_numpy(_numpy_net(x.numpy()))


@pytest.mark.parametrize(("shape", "patch", "overlap"), [
    ((2, 20, 17), (8, 8), 0.25),             # 2D, uneven grid
    ((2, 6, 30), (8, 8), 0.5),               # smaller than the patch on one axis: padded
    ((1, 19, 16, 23), (8, 8, 8), 0.25),      # 3D
    ((2, 12, 12, 12), (12, 12, 12), 0.25),   # exactly one patch
    ((2, 7, 9, 30), (8, 8, 8), 0.6),
])
def test_sliding_window_matches_monai(shape: tuple[int, ...], patch: tuple[int, ...],
                                      overlap: float) -> None:
    image = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    want = sliding_window_inference(torch.from_numpy(image)[None], patch, 3, _torch_net,
                                    overlap=overlap, mode="gaussian")
    assert isinstance(want, torch.Tensor)
    got = sliding_window(image, patch, _numpy_net, overlap=overlap, batch_size=3)
    assert got.shape == (2, *shape[1:])
    np.testing.assert_allclose(got, want[0].numpy(), rtol=1e-5, atol=1e-5)


def _axis_starts(size: int, roi: int, overlap: float, grid: str) -> list[int]:
    return sorted({start[0] for start in patch_starts((size,), (roi,),
                                                      scan_interval((size,), (roi,), overlap),
                                                      grid)})


@pytest.mark.parametrize(("size", "roi", "overlap"), [
    (184, 96, 0.25), (144, 96, 0.25), (96, 96, 0.25), (97, 96, 0.5), (300, 96, 0.25),
    (169, 96, 0.25), (30, 8, 0.6),
])
def test_even_grid_spreads_monai_s_number_of_patches(size: int, roi: int, overlap: float
                                                      ) -> None:
    monai = _axis_starts(size, roi, overlap, "monai")
    even = _axis_starts(size, roi, overlap, "even")
    assert len(even) == len(monai)  # the same cost
    assert even[0] == 0 and even[-1] == size - roi
    steps = np.diff(even)
    assert len(steps) == 0 or steps.max() - steps.min() <= 1  # evenly spread
    assert len(steps) == 0 or steps.max() <= int(roi * (1 - overlap)) + 1


def test_even_grid_takes_apart_monai_s_nearly_coinciding_patches() -> None:
    assert _axis_starts(184, 96, 0.25, "monai") == [0, 72, 88]
    assert _axis_starts(184, 96, 0.25, "even") == [0, 44, 88]


@pytest.mark.parametrize("grid", sorted(GRIDS))
@pytest.mark.parametrize(("shape", "patch"), [((2, 20, 17), (8, 8)), ((1, 19, 16, 23), (8, 8, 8)),
                                              ((2, 6, 30), (8, 8))])
def test_every_grid_blends_an_identity_network_back_into_the_image(
        grid: str, shape: tuple[int, ...], patch: tuple[int, ...]) -> None:
    """The weights of every voxel sum to one on either grid, padding included."""
    image = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    got = sliding_window(image, patch, lambda x: x.copy(), overlap=0.25, batch_size=2,
                         grid=grid)
    np.testing.assert_allclose(got, image, rtol=1e-5, atol=1e-5)


def test_an_unknown_grid_is_refused() -> None:
    with pytest.raises(ValueError, match="grid 'dense' unknown"):
        patch_starts((20,), (8,), (6,), "dense")


@pytest.mark.parametrize(("streams", "want"), [(None, 2), (2, 2), (4, 4)])
def test_exported_segmenter_sends_one_patch_a_stream(streams: int | None, want: int) -> None:
    """An exported network's sliding window sends as many patches a call as the graph has
    CPU streams (at least 2; a graph without streams, ONNX Runtime's, gets 2), unless told."""
    from mrimaster.segmentation.runtime import OnnxSegmenter

    sizes: list[int] = []

    def graph(x: np.ndarray) -> dict[str, np.ndarray]:
        sizes.append(len(x))
        return {"logits": np.zeros((len(x), 3, *x.shape[2:]), np.float32)}

    if streams is not None:
        graph.streams = streams  # type: ignore[attr-defined]
    seg = OnnxSegmenter(["flair"], (8, 8, 8), False, graph=graph)
    image = np.zeros((1, 20, 20, 20), np.float32)  # 3 x 3 x 3 = 27 patches of 8 at 0.25
    assert seg.logits(image).shape == (3, 20, 20, 20)
    assert max(sizes) == want and sum(sizes) == 27
    sizes.clear()
    seg.logits(image, batch_size=5)
    assert max(sizes) == 5
