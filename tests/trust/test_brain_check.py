"""The brain-MRI check: generator, network, threshold, the predict path; then the shipped model
on held-out non-MRI kinds and on real MRI of the shared data (issue 23, item 5)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mrimaster.data import non_mri
from mrimaster.data.images import prepare_slice
from mrimaster.errors import DataError, ModelError
from mrimaster.settings import SHIPPED_MODELS
from mrimaster.training.brain_check import build_net, choose_threshold, fold_weights, train_net
from mrimaster.training.brain_check_data import (
    PREPARED_SIZE,
    BrainCheckConfig,
    brats_parts,
    volume_examples,
    volume_slices,
)
from mrimaster.trust.brain_check import (
    INPUT_SIZE,
    BrainCheck,
    forward,
    load_brain_check,
    thumbnail,
    to_input,
)
from tests.conftest import constant_brain_check as constant_check
from tests.conftest import synthetic_slice

HELD_OUT_TEST_SEED = 9001
"""Not a seed of the shipped model's training (0, 1, 2): new images of the held-out kinds."""


# ---- units, synthetic --------------------------------------------------------------------

@pytest.mark.parametrize("kind", list(non_mri.KINDS))
def test_every_kind_generates_deterministic_grayscale_images(kind: str) -> None:
    a, b = non_mri.generate(kind, 2, seed=5), non_mri.generate(kind, 2, seed=5)
    other = non_mri.generate(kind, 1, seed=6)[0]
    for img, again in zip(a, b, strict=True):
        assert img.dtype == np.uint8 and img.ndim == 2 and min(img.shape) >= 32
        assert np.array_equal(img, again)
        assert img.std() > 0  # not blank
    assert a[0].shape != other.shape or not np.array_equal(a[0], other)


def test_held_out_kinds_are_kinds_and_never_training_kinds() -> None:
    cfg = BrainCheckConfig()
    assert set(cfg.held_out_kinds) == set(non_mri.HELD_OUT_KINDS) <= set(non_mri.KINDS)
    assert not set(cfg.train_kinds) & set(cfg.held_out_kinds)
    with pytest.raises(DataError, match="unknown non-MRI kind"):
        non_mri.generate("x-ray", 1, 0)


def test_matplotlib_mri_slice_decodes_to_a_head() -> None:
    mri = non_mri.matplotlib_mri_slice()
    assert mri.shape == (256, 256) and mri.dtype == np.uint8 and mri.max() == 255
    assert mri[:20, :20].mean() < 20 < mri[100:150, 100:150].mean()  # dark corner, bright head


def test_thumbnail_shapes() -> None:
    x = np.zeros((3, 192, 192), np.uint8)
    x[:, 96:] = 200
    t = thumbnail(x)
    assert t.shape == (3, INPUT_SIZE, INPUT_SIZE) and t.dtype == np.uint8
    assert t[0, 40, 5] == 200 and t[0, 10, 5] == 0  # box filter keeps the halves apart
    assert thumbnail(t) is t
    assert to_input(t).shape == (3, INPUT_SIZE, INPUT_SIZE, 1)
    assert to_input(t).min() == pytest.approx(-2.0) and to_input(t).max() < 2.0
    with pytest.raises(ValueError):
        thumbnail(np.zeros((64, 64), np.uint8))


def test_numpy_forward_equals_the_torch_network_with_batch_norm_folded() -> None:
    import torch

    torch.manual_seed(0)
    net = build_net()
    for m in net.body:  # running statistics that are not the identity
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    net.eval()
    thumbs = np.random.default_rng(0).integers(0, 256, (5, 64, 64), dtype=np.uint8)
    x = to_input(thumbs)
    with torch.no_grad():
        expected = net(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy()
    got = forward(fold_weights(net), x)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_threshold_rejects_at_most_the_target_share_of_calibration_mri() -> None:
    p = np.linspace(0.0, 0.999, 1000)  # p[k] = k * 0.999 / 999
    t = choose_threshold(p, 0.002, ceiling=0.9)
    assert t == pytest.approx(p[1])  # lower 0.2 % quantile: only p[0] lies below it
    assert (p < t).mean() <= 0.002
    assert choose_threshold(p, 0.5, ceiling=0.3) == 0.3  # never above the ceiling
    assert choose_threshold(np.full(10, 0.99), 0.002) == 0.5
    with pytest.raises(DataError):
        choose_threshold(np.zeros(0), 0.002)
    check = constant_check(0.0, threshold=0.4)
    assert check.rejects(np.array([0.39, 0.4, 0.9])).tolist() == [True, False, False]
    assert "p = 0.03 < 0.40" in check.reason(0.031)


def test_save_load_round_trip_and_a_missing_model_is_an_error(tmp_path: Path) -> None:
    check = constant_check(2.0, threshold=0.25)
    check.save(tmp_path / "brain-check")
    loaded = load_brain_check(tmp_path)
    assert loaded.threshold == 0.25
    images = np.random.default_rng(1).integers(0, 256, (4, 192, 192), dtype=np.uint8)
    np.testing.assert_allclose(loaded.score(images), 1 / (1 + np.exp(-2.0)), rtol=1e-6)
    with pytest.raises(ModelError, match="brain-MRI check is not at"):
        load_brain_check(tmp_path / "nothing-here")
    (tmp_path / "brain-check" / "brain_check.json").write_text('{"threshold": 1.5}')
    with pytest.raises(ModelError, match="damaged"):
        BrainCheck.load(tmp_path / "brain-check")


def test_training_on_a_tiny_set_separates_it() -> None:
    pos = np.stack([prepare_slice(synthetic_slice(i, 128, i % 4), PREPARED_SIZE)
                    for i in range(48)])
    neg = np.stack([prepare_slice(im, PREPARED_SIZE) for kind in ("noise", "pattern", "text")
                    for im in non_mri.generate(kind, 16, 3)])
    x = thumbnail(np.concatenate([pos, neg]))
    y = np.r_[np.ones(len(pos)), np.zeros(len(neg))]
    weights = train_net(x, y, BrainCheckConfig(epochs=12, batch_size=32, lr=0.005))
    p = BrainCheck(weights, 0.5).score(x)
    assert ((p > 0.5) == (y == 1)).mean() >= 0.9


def test_volume_slices_cut_three_planes_through_the_brain() -> None:
    vol = np.zeros((40, 50, 30), np.float32)
    vol[5:35, 10:40, 5:25] = np.random.default_rng(0).uniform(1, 2, (30, 30, 20))
    cuts = volume_slices(vol, per_axis=3)
    assert [c[0].split("/")[0] for c in cuts] == ["axial"] * 3 + ["coronal"] * 3 + ["sagittal"] * 3
    assert cuts[0][1].shape == (50, 40) and cuts[3][1].shape == (30, 40)
    assert all(c[1].dtype == np.uint8 and c[1].max() == 255 for c in cuts)
    assert all(5 <= int(c[0].split("/")[1]) < 35 for c in cuts[6:])  # only through the brain


@pytest.mark.realdata
def test_the_command_writes_a_model_folder_and_refuses_the_shipped_one(
        data_root: Path, tmp_path: Path) -> None:
    import json

    from mrimaster.cli.main import main

    tiny = ["--set", "limit=4", "--set", "negatives_per_kind=3", "--set", "calib_per_kind=2",
            "--set", "held_out_per_kind=2", "--set", "epochs=1", "--set", "brats_per_axis=1",
            "--set", "extra_mri=false"]
    assert main(["train-brain-check", "--out", str(SHIPPED_MODELS / "brain-check"), *tiny]) == 2
    out = tmp_path / "bc"
    assert main(["train-brain-check", "--out", str(out), *tiny]) == 0
    for name in ("weights.npz", "model.onnx", "brain_check.json", "config.yaml",
                 "metrics.json", "examples.png", "MODEL_CARD.md"):
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["held_out_reject_per_kind"]) == set(non_mri.HELD_OUT_KINDS)
    assert set(metrics["mri_reject_per_source_report"]) == {"sartaj-training", "br35h-tumour",
                                                            "brats-mini"}
    check = BrainCheck.load(out)
    assert check.threshold == metrics["threshold"] and check.runtime == "onnxruntime"
    assert "never trained" in (out / "MODEL_CARD.md").read_text()


# ---- the predict path ----------------------------------------------------------------------

def test_predict_rejects_what_the_check_rejects_with_no_class(
        trained: tuple[Path, Path], tmp_path: Path) -> None:
    from mrimaster.inference.loading import load_for_inference
    from mrimaster.inference.predict import predict_files

    _, run = trained
    clf = load_for_inference(str(run), SHIPPED_MODELS, "torch", "cpu")
    Image.fromarray(synthetic_slice(3, 128)).save(tmp_path / "a.png")
    rgb = np.random.default_rng(0).integers(0, 256, (128, 128, 3), np.uint8)
    Image.fromarray(rgb).save(tmp_path / "colour.png")
    rows, _ = predict_files(clf, [tmp_path], brain_check=constant_check(-4.0))
    by = {Path(r["path"]).name: r for r in rows}
    a = by["a.png"]
    assert a["status"] == "reject" and a["referred"]
    assert a["reason"] == "not a brain MRI slice (brain-MRI check p = 0.02 < 0.50)"
    assert a["prediction"] is None and a["confidence"] is None
    assert all(a[f"p_{c}"] is None for c in clf.classes)
    assert a["brain_mri_p"] == pytest.approx(1 / (1 + np.exp(4.0)))
    assert "colour" in by["colour.png"]["reason"]  # the input checks speak first
    rows, _ = predict_files(clf, [tmp_path / "a.png"], brain_check=constant_check(4.0))
    assert rows[0]["status"] in ("ok", "refer") and rows[0]["prediction"] in clf.classes


def test_predict_fails_clearly_without_the_check(
        trained: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mrimaster.inference.loading import load_for_inference
    from mrimaster.inference.predict import predict_files

    _, run = trained
    clf = load_for_inference(str(run), SHIPPED_MODELS, "torch", "cpu")
    Image.fromarray(synthetic_slice(3, 128)).save(tmp_path / "a.png")
    monkeypatch.setenv("MRIMASTER_MODELS_DIR", str(tmp_path / "models"))
    with pytest.raises(ModelError, match="brain-MRI check is not at"):
        predict_files(clf, [tmp_path / "a.png"])


def _non_mri_files(folder: Path) -> dict[str, Path]:
    """The kinds the issue measured getting a class: a terrain map, a disk, a gradient, noise
    (drawn here, not by the generator the check was trained with)."""
    from matplotlib import cbook
    from matplotlib.colors import LightSource

    folder.mkdir()
    with np.load(Path(cbook.get_sample_data("jacksboro_fault_dem.npz", asfileobj=False))) as blob:
        z = np.asarray(blob["elevation"], float)
    relief = LightSource(azdeg=315, altdeg=45).hillshade(z, vert_exag=2)
    yy, xx = np.mgrid[0:256, 0:256]
    images = {
        "terrain.png": (relief * 255).astype(np.uint8),
        "disk.png": np.where((yy - 128) ** 2 + (xx - 128) ** 2 < 100 ** 2, 150, 0),
        "gradient.png": np.broadcast_to(np.linspace(0, 255, 256), (256, 256)),
        "noise.png": np.random.default_rng(7).integers(0, 256, (256, 256)),
    }
    paths = {}
    for name, img in images.items():
        Image.fromarray(np.asarray(img, np.uint8)).save(folder / name)
        paths[name] = folder / name
    return paths


def test_default_model_rejects_terrain_disk_gradient_and_noise_without_a_class(
        tmp_path: Path) -> None:
    from mrimaster.api import Classifier

    paths = _non_mri_files(tmp_path / "not-mri")
    preds = {Path(p.path).name: p for p in Classifier.load("default").predict(list(paths.values()))}
    assert set(preds) == set(paths)
    for name, p in preds.items():
        assert p.status == "reject", (name, p)
        assert p.label is None and p.confidence is None and p.probabilities is None
        assert "not a brain MRI slice" in p.reason, (name, p.reason)


# ---- the shipped model on real data ---------------------------------------------------------

def test_shipped_check_rejects_held_out_non_mri_kinds() -> None:
    check = load_brain_check(SHIPPED_MODELS)
    assert set(check.meta["held_out_kinds"]) == set(non_mri.HELD_OUT_KINDS)
    rejected, total, per_kind = 0, 0, {}
    for kind in non_mri.HELD_OUT_KINDS:
        images = np.stack([prepare_slice(im, PREPARED_SIZE)
                           for im in non_mri.generate(kind, 30, HELD_OUT_TEST_SEED)])
        bad = int(check.rejects(check.score(images)).sum())
        per_kind[kind] = bad / len(images)
        rejected, total = rejected + bad, total + len(images)
    assert rejected / total >= 0.95, per_kind


def test_shipped_check_accepts_matplotlibs_mri_slice_it_never_trained_on() -> None:
    check = load_brain_check(SHIPPED_MODELS)
    image = prepare_slice(non_mri.matplotlib_mri_slice(), PREPARED_SIZE)[None]
    assert not check.rejects(check.score(image))[0]


def test_shipped_onnx_and_numpy_give_the_same_probabilities() -> None:
    check = load_brain_check(SHIPPED_MODELS)
    assert check.runtime == "onnxruntime"  # the fast extra is installed for the tests
    images = np.stack([prepare_slice(im, PREPARED_SIZE) for im in non_mri.generate("disk", 8, 77)])
    numpy_only = BrainCheck(check.weights, check.threshold)
    np.testing.assert_allclose(check.score(images), numpy_only.score(images), atol=1e-5)


@pytest.mark.realdata
def test_shipped_check_keeps_real_mri_of_the_shared_sets(data_root: Path) -> None:
    """A deterministic sample of MRI the check never trained on (the report part): every
    4th sartaj-training test/shift slice, every br35h-tumour report slice, and axial,
    coronal and sagittal slices of the report BraTS cases."""
    from mrimaster.data.folders import load_slices
    from mrimaster.data.splits import SplitTable

    check = load_brain_check(SHIPPED_MODELS)
    cfg = BrainCheckConfig()
    sartaj = SplitTable.load(Path(cfg.sartaj_split))
    br35h = SplitTable.load(Path(cfg.br35h_split))
    files = ([data_root / cfg.sartaj_dir / p for p, s in zip(sartaj.paths, sartaj.splits,
                                                              strict=True)
              if s in ("test", "shift")][::4]
             + [data_root / cfg.br35h_dir / p for p, s in zip(br35h.paths, br35h.splits,
                                                               strict=True) if s == "report"])
    slices = load_slices(files, None, PREPARED_SIZE, progress=False)
    brats = volume_examples(brats_parts(data_root / cfg.brats_dir)["report"], 3, "brats-mini",
                            "report")
    p_files, p_brats = check.score(slices.images), check.score(brats.images)
    sources = ["br35h" if "br35h" in str(f) else "sartaj" for f in slices.paths]
    rejected = {s: int(check.rejects(p_files[[k == s for k in sources]]).sum())
                for s in ("sartaj", "br35h")}
    rejected["brats"] = int(check.rejects(p_brats).sum())
    total = len(p_files) + len(p_brats)
    assert total >= 300 and len(p_brats) >= 40
    assert sum(rejected.values()) / total <= 0.005, (rejected, total)


def test_an_excluded_image_goes_to_the_part_of_its_near_duplicate_group(tmp_path: Path) -> None:
    """The rest of a held-out style cluster (`excluded`) is real MRI that the check may use, on
    the side where its near-copies are."""
    from mrimaster.data.splits import SplitTable
    from mrimaster.training.brain_check_data import _SARTAJ_PART, _files
    from tests.conftest import write_class_folders

    write_class_folders(tmp_path, per_class=2, names=("glioma_tumor", "meningioma"))
    paths = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("img_*"))
    table = SplitTable(paths, ["glioma", "glioma", "meningioma", "meningioma"], [0, 0, 1, 1],
                       ["val", "excluded", "shift", "excluded"])
    ex = _files(tmp_path, table, _SARTAJ_PART, "sartaj", 0)
    part = dict(zip(ex.names, ex.parts, strict=True))
    assert part == {paths[0]: "calib", paths[1]: "calib", paths[2]: "report",
                    paths[3]: "report"}
