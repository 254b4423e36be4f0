"""Perceptual hashing and near-duplicate grouping.

The hash is the DCT perceptual hash (pHash; Zauner, "Implementation and Benchmarking of
Perceptual Image Hash Functions", 2010), enlarged: the image, cropped to its foreground, is
resized to 64x64, transformed with a 2D DCT-II, and the 16x16 lowest frequencies are thresholded
at their median, giving 256 bits. (The common 64-bit pHash cannot tell brain slices apart: on
the Sartaj training folder nearly every slice lies within 10 bits of another patient's.) It is
robust to re-encoding, resizing and small intensity changes. To catch flipped and rotated copies
too, every image is also hashed in its 8 dihedral variants (4 rotations by 90 degrees x optional
mirror); two images are near-duplicates when the hash of one is within ``threshold`` bits of any
variant of the other.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from mrimaster.data.images import foreground_box

HASH_SIZE = 16
HASH_BITS = HASH_SIZE * HASH_SIZE
_RESIZE = 64
DEFAULT_THRESHOLD = 52
"""Hamming distance (of 256 bits) at or below which two slices count as near-duplicates.

Chosen on the Sartaj training folder by looking at pairs at each distance (the audit's
``pair_distances.png``): pairs up to about 52 bits apart are, by eye, nearly all re-encoded
copies or neighbouring slices of one patient; from about 56 bits most are different patients,
and grouping chains into components of hundreds of images (the largest group has 147 images at
52 bits, 327 at 56, 1,032 at 60)."""


def _dct_matrix(n: int) -> np.ndarray:
    k = np.arange(n)[:, None]
    i = np.arange(n)[None, :]
    mat = np.cos(np.pi * (2 * i + 1) * k / (2 * n)) * np.sqrt(2.0 / n)
    mat[0] /= np.sqrt(2.0)
    return mat


_DCT = _dct_matrix(_RESIZE)


def _pack_bits(bits: np.ndarray) -> np.ndarray:
    """``HASH_BITS`` booleans -> ``(HASH_BITS // 64,)`` uint64 words."""
    return np.packbits(bits.ravel()).view(">u8").astype(np.uint64)


def dihedral_variants(square: np.ndarray) -> list[np.ndarray]:
    """The 8 images obtained by rotating by 0/90/180/270 degrees, with and without mirroring."""
    out: list[np.ndarray] = []
    for mirrored in (square, square[:, ::-1]):
        out.extend(np.rot90(mirrored, k) for k in range(4))
    return out


def phash_variants(gray: np.ndarray) -> np.ndarray:
    """256-bit pHash of a slice and of its 7 other dihedral variants.

    Args:
        gray: ``(H, W)`` uint8 slice.

    Returns:
        ``(8, 4)`` uint64; row 0 is the hash of the image as given.
    """
    top, bottom, left, right = foreground_box(gray)
    crop = Image.fromarray(np.ascontiguousarray(gray[top:bottom, left:right]))
    small = np.asarray(crop.resize((_RESIZE, _RESIZE), Image.Resampling.BILINEAR), np.float64)
    hashes = np.empty((8, HASH_BITS // 64), dtype=np.uint64)
    for idx, variant in enumerate(dihedral_variants(small)):
        coeffs = (_DCT @ variant @ _DCT.T)[:HASH_SIZE, :HASH_SIZE]
        hashes[idx] = _pack_bits(coeffs > np.median(coeffs))
    return hashes


def min_hamming(hashes_a: np.ndarray, hashes_b: np.ndarray) -> np.ndarray:
    """Smallest Hamming distance between each hash of A and any dihedral variant of each of B.

    Args:
        hashes_a: ``(N, 8, W)`` uint64 (only variant 0 is used).
        hashes_b: ``(M, 8, W)`` uint64.

    Returns:
        ``(N, M)`` int array of distances in ``[0, 64 * W]``.
    """
    best = np.full((hashes_a.shape[0], hashes_b.shape[0]), 64 * hashes_a.shape[2], np.int64)
    for v in range(hashes_b.shape[1]):
        dist = np.zeros_like(best)
        for w in range(hashes_a.shape[2]):
            dist += np.bitwise_count(hashes_a[:, 0, w][:, None] ^ hashes_b[:, v, w][None, :])
        np.minimum(best, dist, out=best)
    return best


class _UnionFind:
    def __init__(self, n: int) -> None:
        self.parent = np.arange(n)

    def find(self, i: int) -> int:
        root = i
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[i] != root:
            self.parent[i], i = root, self.parent[i]
        return int(root)

    def union(self, i: int, j: int) -> None:
        ri, rj = self.find(i), self.find(j)
        if ri != rj:
            self.parent[max(ri, rj)] = min(ri, rj)


def group_ids(n: int, pairs: np.ndarray) -> np.ndarray:
    """Connected components of ``n`` items linked by ``pairs`` (``(P, 2)`` int).

    Returns:
        ``(n,)`` int64 group id per item: the smallest index in its component.
    """
    uf = _UnionFind(n)
    for i, j in pairs:
        uf.union(int(i), int(j))
    return np.array([uf.find(i) for i in range(n)], dtype=np.int64)


def near_duplicate_pairs(hashes: np.ndarray, threshold: int = DEFAULT_THRESHOLD) -> np.ndarray:
    """Index pairs ``(i, j)``, ``i < j``, whose distance is at most ``threshold``.

    Distances are symmetrised (the smaller of the two directions).
    """
    dist = min_hamming(hashes, hashes)
    dist = np.minimum(dist, dist.T)
    i, j = np.nonzero(np.triu(dist <= threshold, k=1))
    return np.stack([i, j], axis=1)


def near_duplicate_groups(hashes: np.ndarray, threshold: int = DEFAULT_THRESHOLD) -> np.ndarray:
    """Group id per image, near-duplicates (transitively) sharing one id. See :func:`group_ids`."""
    return group_ids(hashes.shape[0], near_duplicate_pairs(hashes, threshold))
