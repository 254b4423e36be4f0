"""Seed every global random generator for a block, and give the caller's state back after it.

Training and the Grad-CAM sanity check need reproducible draws from the global generators
(weight initialisation, dropout, torchvision's random transforms use them). Library code must
not leave them changed for a notebook that called it, so :func:`seeded` restores Python's,
NumPy's and torch's global states on exit.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Seed ``random``, ``numpy.random`` and torch (CPU and CUDA) with ``seed`` inside the
    block; restore their previous states afterwards, also on errors."""
    py_state, np_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=range(torch.cuda.device_count())):
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)
        try:
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)
