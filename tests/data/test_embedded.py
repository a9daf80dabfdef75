"""The embedded sets (no download): toy2d, mnist1d, digits. Shapes, indices, seeded splits, label noise,
and the mnist1d cache file that concurrent runs share."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kdlib.data import DATASETS, TensorSplit, load_data, mnist1d

CASES = [
    ({"name": "toy2d", "shape": "moons", "n_samples": 300}, (2,), 2),
    ({"name": "toy2d", "shape": "circles", "n_samples": 300}, (2,), 2),
    ({"name": "toy2d", "shape": "spirals", "n_samples": 300, "num_classes": 3}, (2,), 3),
    ({"name": "toy2d", "shape": "blobs", "n_samples": 300, "num_classes": 4}, (2,), 4),
    ({"name": "mnist1d", "n_samples": 400}, (40,), 10),
    ({"name": "digits"}, (1, 8, 8), 10),
]


def data_spec(**fields):
    return DATASETS.get(fields["name"]).Params(**fields)


@pytest.mark.parametrize(("fields", "shape", "classes"), CASES, ids=[c[0].get("shape", c[0]["name"]) for c in CASES])
def test_splits_have_the_documented_shapes_and_every_index_once(fields, shape, classes):
    bundle = load_data(data_spec(**fields))
    assert bundle.input_shape == shape and bundle.num_classes == classes
    for split in (bundle.train, bundle.val, bundle.test):
        assert isinstance(split, TensorSplit) and len(split) > 0
        seen = []
        for batch in split.batches(64, shuffle=True, generator=torch.Generator().manual_seed(0)):
            assert tuple(batch.x.shape[1:]) == shape and batch.x.dtype == torch.float32
            assert torch.equal(batch.x, split.x[batch.index]) and torch.equal(batch.y, split.y[batch.index])
            seen.append(batch.index)
        assert sorted(torch.cat(seen).tolist()) == list(range(len(split)))  # each sample once, by its index
        assert set(split.y.unique().tolist()) <= set(range(classes))


def test_splits_are_seeded_and_disjoint():
    first, again = (load_data(data_spec(name="toy2d", n_samples=200)) for _ in range(2))
    other = load_data(data_spec(name="toy2d", n_samples=200, split_seed=1))
    assert torch.equal(first.train.x, again.train.x)
    assert not torch.equal(first.train.x, other.train.x)
    rows = torch.cat([first.train.x, first.val.x, first.test.x])
    assert len(rows) == 200 and len(torch.unique(rows, dim=0)) == 200
    assert (len(first.val), len(first.test)) == (20, 40)  # the default fractions 0.1 and 0.2


def test_label_noise_flips_that_share_of_training_labels_only():
    clean = load_data(data_spec(name="toy2d", n_samples=2000))
    noisy = load_data(data_spec(name="toy2d", n_samples=2000, label_noise=0.3))
    flipped = (clean.train.y != noisy.train.y).float().mean().item()
    assert 0.25 < flipped < 0.35
    assert torch.equal(clean.test.y, noisy.test.y) and torch.equal(clean.val.y, noisy.val.y)


def test_mnist1d_is_cached_and_two_writers_at_once_both_get_their_file(monkeypatch):
    """Six runs launched together all generate the same set; a second writer finishing between the first
    one's write and its rename used to take the first one's temporary file from under it."""
    params = data_spec(name="mnist1d", n_samples=300)
    savez, calls = np.savez, []

    def savez_then_another_writer(file, **arrays):
        savez(file, **arrays)
        calls.append(file)
        if len(calls) == 1:
            mnist1d.generate(params)  # the other process, start to finish

    monkeypatch.setattr(mnist1d.np, "savez", savez_then_another_writer)
    arrays = mnist1d.generate(params)
    assert len(calls) == 2 and arrays["x"].shape == (240, 40)
    cached = list(mnist1d.cache_dir().iterdir())
    assert [p.suffix for p in cached] == [".npz"]  # no temporary file left behind
    again = mnist1d.generate(params)  # read from the cache
    assert np.array_equal(again["x"], arrays["x"]) and len(calls) == 2
