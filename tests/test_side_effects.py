"""Importing or calling the library leaves the caller's plotting backend and random state alone
(a notebook that imports mrimaster keeps its own)."""

from __future__ import annotations

import subprocess
import sys

CHECK = """
import importlib, pkgutil, random, warnings
import matplotlib
matplotlib.use("pdf")
import numpy as np
import torch
torch.manual_seed(1234)
random.seed(5)
np.random.seed(6)
states = (random.getstate(), np.random.get_state()[1].copy(), torch.get_rng_state().clone())
import mrimaster
for info in pkgutil.walk_packages(mrimaster.__path__, "mrimaster."):
    importlib.import_module(info.name)
assert matplotlib.get_backend().lower() == "pdf", matplotlib.get_backend()
assert torch.initial_seed() == 1234
assert random.getstate() == states[0]
assert (np.random.get_state()[1] == states[1]).all()
assert torch.equal(torch.get_rng_state(), states[2])
print("OK")
"""


def test_importing_every_module_changes_no_backend_and_no_random_state() -> None:
    out = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "OK"


def test_importing_mrimaster_prints_nothing_even_with_deprecations_as_errors() -> None:
    out = subprocess.run([sys.executable, "-W", "error::DeprecationWarning", "-c",
                          "import mrimaster"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout == "" and out.stderr == ""


def test_seeded_calls_give_the_global_generators_back() -> None:
    import random

    import numpy as np
    import torch

    from mrimaster.explain.sanity import randomize_weights
    from mrimaster.models.registry import build_model

    net = build_model("mri-cnn", 4, pretrained=False, image_size=64)
    torch.manual_seed(99)
    random.seed(3)
    before = (torch.get_rng_state().clone(), random.getstate(), np.random.get_state()[1].copy())
    a = randomize_weights(net, seed=0)
    b = randomize_weights(net, seed=0)
    assert torch.equal(before[0], torch.get_rng_state())
    assert before[1] == random.getstate() and (before[2] == np.random.get_state()[1]).all()
    # ... while the seeded work itself is reproducible
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(),
                                                 b.state_dict().values(), strict=True))
