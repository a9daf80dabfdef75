"""domain_pair: presets, shapes and indices, masked target labels, seeded splits, errors, downloads."""

from __future__ import annotations

import bz2
import math
import os
import shutil
import struct

import numpy as np
import pytest
import scipy.io
import torch
import torchvision.datasets as tvd
from PIL import Image
from pydantic import ValidationError

from kdlib.data import DATASETS, LoaderSplit, TensorSplit, load_data
from kdlib.data.domain_pair import fetch_archive, masked, rotate_shift
from kdlib.validation import validate_config

Params = DATASETS.get("domain_pair").Params
TOY = {"source": {"n_samples": 200}, "target": {"n_samples": 100}}


def indices_cover(split) -> None:
    index = torch.cat([b.index for b in split.batches(7)])
    assert torch.equal(index, torch.arange(len(split)))


def test_toy2d_shift_shapes_indices_and_masked_target():
    bundle = load_data(Params(preset="toy2d_shift", **TOY))
    # source 200: 10% val, 20% test (unused); target 100: no val, 20% test
    assert (len(bundle.train), len(bundle.val), len(bundle.test), len(bundle.target_train)) == (140, 20, 20, 80)
    assert bundle.input_shape == (2,) and bundle.num_classes == 2
    for split in (bundle.train, bundle.val, bundle.test, bundle.target_train):
        assert split.x.shape[1:] == (2,)
        indices_cover(split)
    assert (bundle.target_train.y == -1).all() and all((b.y == -1).all() for b in bundle.target_train.batches(16))
    assert set(bundle.test.y.tolist()) <= {0, 1} and set(bundle.train.y.tolist()) == {0, 1}


def test_toy2d_shift_target_is_the_generators_points_rotated_about_their_mean():
    p = Params(preset="toy2d_shift", angle=90.0, shift=(1.0, -2.0), **TOY)
    plain = load_data(p.target)  # the target's own toy2d spec: other points than the source's
    bundle = load_data(p)
    center = plain.train.x.mean(0)
    assert torch.allclose(bundle.target_train.x, rotate_shift(plain.train.x, 90.0, (1.0, -2.0), center), atol=1e-6)
    assert torch.allclose(bundle.test.x, rotate_shift(plain.test.x, 90.0, (1.0, -2.0), center), atol=1e-6)
    assert torch.equal(bundle.test.y, plain.test.y)
    assert p.target.split_seed != p.source.split_seed


def test_rotate_shift_by_hand():
    x = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    assert torch.allclose(rotate_shift(x, 90.0, (0.0, 0.0)), torch.tensor([[0.0, 1.0], [-2.0, 0.0]]), atol=1e-6)
    rotated = rotate_shift(x, 180.0, (0.5, 0.0), center=torch.tensor([1.0, 1.0]))
    assert torch.allclose(rotated, torch.tensor([[1.5, 2.0], [2.5, 0.0]]), atol=1e-6)
    assert rotate_shift(x, 45.0, (0.0, 0.0))[0].tolist() == pytest.approx([math.sqrt(0.5)] * 2)


def test_splits_are_seeded():
    a, b = load_data(Params(preset="toy2d_shift", **TOY)), load_data(Params(preset="toy2d_shift", **TOY))
    assert torch.equal(a.train.x, b.train.x) and torch.equal(a.target_train.x, b.target_train.x)
    c = load_data(Params(preset="toy2d_shift", source={"n_samples": 200, "split_seed": 5}, target={"n_samples": 100}))
    assert not torch.equal(a.train.x, c.train.x) and torch.equal(a.target_train.x, c.target_train.x)


def test_mnist1d_shift_is_another_generation():
    p = Params(preset="mnist1d_shift", source={"n_samples": 300}, target={"n_samples": 200})
    assert (p.target.noise_scale, p.target.scale_coeff, p.source.noise_scale) == (0.4, 0.6, 0.25)
    assert p.target.generator_seed != p.source.generator_seed
    bundle = load_data(p)
    assert bundle.input_shape == (40,) and bundle.num_classes == 10
    assert (len(bundle.train), len(bundle.val), len(bundle.test), len(bundle.target_train)) == (210, 30, 40, 160)
    assert (bundle.target_train.y == -1).all() and bundle.test.y.max() < 10
    for split in (bundle.train, bundle.test, bundle.target_train):
        indices_cover(split)


def test_preset_fields_merge_and_a_named_side_replaces():
    p = Params(preset="mnist1d_shift", target={"noise_scale": 0.9})
    assert (p.target.name, p.target.noise_scale, p.target.scale_coeff, p.target.generator_seed) == (
        "mnist1d",
        0.9,
        0.6,
        7,
    )
    q = Params(preset="toy2d_shift", target={"name": "toy2d", "shape": "circles"})
    assert q.target.shape == "circles" and q.angle == 35.0
    r = Params(source={"name": "toy2d"}, target={"name": "toy2d", "split_seed": 3})  # no preset: plain specs
    assert (r.angle, r.shift, r.target.split_seed) == (0.0, (0.0, 0.0), 3)


def test_config_round_trip_keeps_the_pair():
    config = validate_config(
        {"data": {"name": "domain_pair", "preset": "toy2d_shift", "angle": 20}, "student": {"name": "mlp"}}
    )
    again = validate_config(config.to_dict())
    assert again.data == config.data and again.data.angle == 20 and again.data.target.split_seed == 1


def test_errors_name_the_field():
    with pytest.raises(ValueError, match=r"data\.target has 3 classes"):
        load_data(
            Params(
                source={"name": "toy2d", "n_samples": 100},
                target={"name": "toy2d", "shape": "blobs", "num_classes": 3, "n_samples": 100},
            )
        )
    with pytest.raises(ValueError, match=r"data\.angle"):
        load_data(
            Params(
                source={"name": "mnist1d", "n_samples": 200}, target={"name": "mnist1d", "n_samples": 200}, angle=10.0
            )
        )
    with pytest.raises(ValueError, match=r"data\.target has samples of shape \[2\]"):
        load_data(
            Params(
                source={"name": "mnist1d", "n_samples": 200},
                target={"name": "toy2d", "shape": "blobs", "num_classes": 10, "n_samples": 100},
            )
        )
    with pytest.raises(ValidationError, match="source_domain"):
        Params(preset="office31", source_domain="caltech")
    with pytest.raises(ValidationError, match="source"):
        Params(source={"name": "domain_pair", "preset": "toy2d_shift"}, target={"name": "toy2d"})
    with pytest.raises(ValidationError, match="target"):
        Params(source={"name": "toy2d"})


def test_masked_loader_split_yields_minus_one():
    dataset = torch.utils.data.TensorDataset(torch.randn(5, 2), torch.arange(5))
    split = masked(LoaderSplit(dataset, torch.arange(5), num_workers=0, pin_memory=False))
    batch = next(split.batches(5))
    assert (batch.y == -1).all() and (split.targets == -1).all() and torch.equal(batch.index, torch.arange(5))


# ---- torchvision pairs, from tiny files in each set's on-disk format ----


def _idx(path, a):
    path.write_bytes(struct.pack(">I", 0x0800 + a.ndim) + struct.pack(f">{a.ndim}I", *a.shape) + a.tobytes())


def write_mnist(root, rng, n_train=20, n_test=10):
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        _idx(raw / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
        _idx(raw / f"{prefix}-labels-idx1-ubyte", rng.integers(0, 10, n).astype(np.uint8))


def write_usps(root, rng, n_train=12, n_test=8) -> list[int]:
    """libsvm lines `label index:value ...` with labels 1..10 and pixels in [-1, 1], bz2-compressed."""
    labels = []
    for name, n in (("usps.bz2", n_train), ("usps.t.bz2", n_test)):
        y = rng.integers(1, 11, n)
        lines = [
            f"{label} " + " ".join(f"{i + 1}:{v:.4f}" for i, v in enumerate(rng.uniform(-1, 1, 256))) for label in y
        ]
        (root / name).write_bytes(bz2.compress(("\n".join(lines) + "\n").encode()))
        labels = (y - 1).tolist()
    return labels


def test_mnist_usps_resizes_the_target_to_the_source(tmp_path):
    rng = np.random.default_rng(0)
    write_mnist(tmp_path, rng)
    usps_test_labels = write_usps(tmp_path, rng)
    bundle = load_data(Params(preset="mnist_usps", root=str(tmp_path)))
    assert bundle.input_shape == (1, 28, 28)
    assert (len(bundle.train), len(bundle.val), len(bundle.test), len(bundle.target_train)) == (18, 2, 8, 12)
    assert bundle.test.x.shape == (8, 1, 28, 28) and bundle.target_train.x.shape == (12, 1, 28, 28)
    assert bundle.test.y.tolist() == usps_test_labels and (bundle.target_train.y == -1).all()


def test_svhn_mnist_brings_gray_digits_to_three_channels(tmp_path, monkeypatch):
    monkeypatch.setattr(tvd.svhn, "check_integrity", lambda fpath, md5=None: os.path.isfile(fpath))  # no md5 here
    rng = np.random.default_rng(1)
    for split, n in (("train", 20), ("test", 10)):
        x = rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8)
        scipy.io.savemat(
            tmp_path / f"{split}_32x32.mat", {"X": x, "y": rng.integers(1, 11, n).astype(np.uint8)[:, None]}
        )
    write_mnist(tmp_path, rng)
    bundle = load_data(Params(preset="svhn_mnist", root=str(tmp_path)))
    assert bundle.input_shape == (3, 32, 32)
    assert bundle.test.x.shape == (10, 3, 32, 32) and bundle.target_train.x.shape == (20, 3, 32, 32)
    assert torch.equal(bundle.test.x[:, 0], bundle.test.x[:, 2])  # the gray channel, repeated


# ---- Office-31 / ImageCLEF-DA through image_folder ----

CLASSES = ["back_pack", "bike", "calculator"]


def write_domains(root, domains=("amazon", "webcam"), per_class=4, layout="images"):
    rng = np.random.default_rng(len(domains))
    for domain in domains:
        for c in CLASSES:
            folder = root / domain / layout / c if layout else root / domain / c
            folder.mkdir(parents=True)
            for i in range(per_class):
                Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(folder / f"{i}.jpg")
    return root


def office(root, **kw):
    return Params(
        preset="office31", root=str(root), image_size=16, source={"num_workers": 0}, target={"num_workers": 0}, **kw
    )


def test_office31_target_is_transductive(tmp_path):
    bundle = load_data(office(write_domains(tmp_path / "office31")))
    assert bundle.class_names == CLASSES and bundle.input_shape == (3, 16, 16)
    assert (len(bundle.train), len(bundle.val), len(bundle.test), len(bundle.target_train)) == (11, 1, 12, 12)
    assert isinstance(bundle.target_train, TensorSplit) and (bundle.target_train.y == -1).all()
    assert sorted(bundle.test.y.tolist()) == [0] * 4 + [1] * 4 + [2] * 4  # every webcam image, labelled
    # the same images, in the same order (the target folder is read for both)
    assert torch.equal(
        torch.sort(bundle.test.x.flatten(1).sum(1)).values, torch.sort(bundle.target_train.x.flatten(1).sum(1)).values
    )


def test_office31_augmented_target_reads_through_a_loader(tmp_path):
    p = office(write_domains(tmp_path / "office31"))
    p = Params(
        **{
            **p.model_dump(),
            "source": {**p.source.model_dump(), "augment": True},
            "target": {**p.target.model_dump(), "augment": True},
        }
    )
    bundle = load_data(p).to("cpu")
    assert isinstance(bundle.target_train, LoaderSplit)
    batch = next(bundle.target_train.batches(5))
    assert batch.x.shape == (5, 3, 16, 16) and (batch.y == -1).all()


def write_image_clef(root, domains=("i", "p"), per_class=2):
    """ImageCLEF-DA's layout: flat domain folders of images, labels in list/<domain>List.txt."""
    rng = np.random.default_rng(3)
    (root / "list").mkdir(parents=True)
    for domain in domains:
        (root / domain).mkdir()
        lines = []
        for label in range(12):
            for i in range(per_class):
                name = f"{label}_{i}.jpg"
                Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(root / domain / name)
                lines.append(f"{domain}/{name} {label}")
        (root / "list" / f"{domain}List.txt").write_text("\n".join(lines) + "\n")
    return root


def test_image_clef_lists_are_arranged_into_class_folders(tmp_path):
    root = write_image_clef(tmp_path / "clef")
    p = Params(preset="image_clef", root=str(root), image_size=16, source={"num_workers": 0}, target={"num_workers": 0})
    bundle = load_data(p)
    assert bundle.num_classes == 12 and bundle.class_names == [f"{k:02d}" for k in range(12)]
    assert len(bundle.test) == len(bundle.target_train) == 24
    assert sorted(bundle.test.y.tolist()) == sorted(list(range(12)) * 2)
    assert (root / "by_class" / "p" / "07" / "7_1.jpg").is_symlink()


def test_mismatched_class_folders_are_refused(tmp_path):
    root = write_domains(tmp_path / "office31")
    shutil.rmtree(root / "webcam" / "images" / "bike")
    (root / "webcam" / "images" / "bicycle").mkdir()
    Image.new("RGB", (8, 8)).save(root / "webcam" / "images" / "bicycle" / "0.jpg")
    with pytest.raises(ValueError, match=r"data\.target has class folders"):
        load_data(office(root))


def test_missing_domains_without_download_name_the_fields(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"data\.root") as e:
        load_data(office(tmp_path / "nowhere"))
    assert "data.download: true" in str(e.value) and "data.archive_url" in str(e.value)


@pytest.mark.parametrize("fmt", ["gztar", "zip"])
def test_download_fetches_and_unpacks_an_archive(tmp_path, fmt):
    made = write_domains(tmp_path / "made")
    archive = shutil.make_archive(str(tmp_path / "domain_adaptation_images"), fmt, root_dir=made)
    root = tmp_path / "office31"
    bundle = load_data(office(root, download=True, archive_url=f"file://{archive}"))
    assert len(bundle.test) == 12 and (root / "amazon" / "images" / "bike").is_dir()
    assert not list(root.glob("domain_adaptation_images*"))  # the archive is removed once unpacked


def test_download_errors_name_the_url(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"data\.archive_url"):
        fetch_archive(f"file://{tmp_path}/absent.tar.gz", tmp_path / "out")
    (tmp_path / "not_an_archive.txt").write_text("hello")
    with pytest.raises(ValueError, match=r"not a zip or tar archive"):
        fetch_archive(f"file://{tmp_path}/not_an_archive.txt", tmp_path / "out")
    wrong = write_domains(tmp_path / "wrong", domains=("amazon",))
    archive = shutil.make_archive(str(tmp_path / "partial"), "gztar", root_dir=wrong)
    with pytest.raises(FileNotFoundError, match="webcam"):
        load_data(office(tmp_path / "office31", download=True, archive_url=f"file://{archive}"))
