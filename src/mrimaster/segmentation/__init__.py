"""3D brain tumour segmentation of multimodal MRI (BraTS-style)."""

import importlib.util as _util
import random as _random

# MONAI imports rich where it is installed (NNCF, in the `fast` extra, brings it), and rich
# draws from Python's global random generator at import (``rich/style.py``:
# ``count(getrandbits(24))``). Import it here first, with the caller's random state put
# back, so that importing this package leaves that state alone (tests/test_side_effects.py).
if _util.find_spec("rich") is not None:
    _state = _random.getstate()
    try:
        import rich.style  # noqa: F401
    finally:
        _random.setstate(_state)
