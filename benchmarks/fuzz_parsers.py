"""Coverage-guided fuzzing (atheris, libFuzzer) of the parsers that read users' files.

Each target writes the fuzzer's bytes to a file and runs the project's loader on it, as a user's
file would be read. A clear :class:`mrimaster.errors.MRIMasterError` is the expected answer to
bad input; any other exception is a crash: libFuzzer stops and writes the input to
``crash-*`` in the working folder (make it a regression test in ``tests/test_fuzz_regressions.py``).

    pip install atheris
    python benchmarks/fuzz_parsers.py image --seconds 600      # also: nifti, case, config

Seeds are small valid files generated here (a PNG, a JPEG, NIfTI 1 and 2, gzipped or not, a
YAML config), so the fuzzer starts from inputs that get deep into each parser.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import io
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import atheris
import numpy as np

from mrimaster.errors import MRIMasterError

with atheris.instrument_imports(include=["mrimaster", "PIL", "nibabel", "yaml", "gzip",
                                         "zlib"]):
    import nibabel as nib
    from PIL import Image

    from mrimaster.config import load_config
    from mrimaster.data.images import load_slice_file, prepare_slice
    from mrimaster.segmentation.cases import explicit_case
    from mrimaster.segmentation.volumes import load_nifti, load_volume

WORK = Path(tempfile.mkdtemp(prefix="mrimaster-fuzz-"))


def _image(data: bytes) -> None:
    path = WORK / "input.img"
    path.write_bytes(data)
    gray, _ = load_slice_file(path)
    prepare_slice(gray, 64)


def _nifti_path(data: bytes) -> Path:
    """First byte picks the suffix: ``.nii`` or ``.nii.gz`` (nibabel reads by suffix)."""
    suffix = ".nii.gz" if data[:1] and data[0] & 1 else ".nii"
    path = WORK / f"input{suffix}"
    path.write_bytes(data[1:])
    return path


def _nifti(data: bytes) -> None:
    load_nifti(_nifti_path(data))


def _case(data: bytes) -> None:
    path = _nifti_path(data)
    load_volume(explicit_case("fuzz", {"flair": path}), ["flair"])


def _config(data: bytes) -> None:
    from mrimaster.training.config import TrainConfig  # pulls in torch: not instrumented

    path = WORK / "config.yaml"
    path.write_bytes(data)
    load_config(TrainConfig, path)


TARGETS: dict[str, Callable[[bytes], None]] = {
    "image": _image, "nifti": _nifti, "case": _case, "config": _config}


def _seeds(target: str, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    if target == "image":
        img = (rng.random((70, 80)) * 255).astype(np.uint8)
        for fmt in ("PNG", "JPEG", "BMP", "TIFF"):
            buf = io.BytesIO()
            Image.fromarray(img).save(buf, fmt)
            (folder / f"seed.{fmt.lower()}").write_bytes(buf.getvalue())
    elif target in ("nifti", "case"):
        vol = (rng.random((6, 7, 5)) * 100).astype(np.float32)
        for i, cls in enumerate((nib.Nifti1Image, nib.Nifti2Image)):
            raw = cls(vol, np.diag([1.0, 1.0, 2.0, 1.0])).to_bytes()
            (folder / f"seed{i}.bin").write_bytes(b"\x00" + raw)
            (folder / f"seed{i}gz.bin").write_bytes(b"\x01" + gzip.compress(raw))
    else:
        (folder / "seed.yaml").write_bytes(b"model: mri-cnn\nepochs: 2\nlr: 0.001\n"
                                           b"freeze: [a, b]\naugment: shift\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("target", choices=sorted(TARGETS))
    parser.add_argument("--seconds", type=int, default=600)
    parser.add_argument("--corpus", type=Path, help="corpus folder (default: a fresh one)")
    args, rest = parser.parse_known_args()
    corpus = args.corpus or WORK / f"corpus-{args.target}"
    _seeds(args.target, corpus)
    fn = TARGETS[args.target]

    def one_input(data: bytes) -> None:
        with contextlib.suppress(MRIMasterError):  # the clear error a user gets: expected
            fn(data)

    atheris.Setup([sys.argv[0], f"-max_total_time={args.seconds}", "-rss_limit_mb=4096",
                   "-timeout=20", "-print_final_stats=1", *rest, str(corpus)], one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
