"""The class-mean and nearest-neighbour baselines: fitted on the train split only, lookups right."""

import numpy as np
import pytest
import torch
import zarr

from s2r_data.store import open_dataset
from s2r_data.store.synthetic import write_synthetic_dataset
from s2r_train.baselines import fit_class_mean, fit_nearest_neighbour, render_descriptor
from s2r_train.splits import assign_splits

from .helpers import one_thread_deterministic_restored  # noqa: F401


def _store(path, n=6):
    write_synthetic_dataset(path, n, height=32, chunk_px=32)
    assign_splits(path, [0.5, 0.5, 1], seed=0)
    return path


def _rows(url, split):
    return [i for i, s in enumerate(open_dataset(url).index.column("split").to_pylist()) if s == split]


def _overwrite_photo(url, row, value):
    """Paint sample ``row``'s photo (every level) with one colour, after it was written."""
    reader = open_dataset(url)
    g = zarr.open_group(str(url / "data.zarr"), mode="r+")
    z = reader.zarr_index(row)
    for name in ("real", "real_l1"):
        a = g[name]
        a[z] = np.full(a.shape[1:], value, np.uint8)


def test_class_mean_is_fitted_on_train_pixels_only(tmp_path):
    url = _store(tmp_path / "s")
    before = fit_class_mean(url)
    assert before.colours.shape == (7, 3) and set(before.source_ids) == {open_dataset(url).image_ids[i]
                                                                          for i in _rows(url, "train")}
    for r in _rows(url, "val"):  # val photos changed beyond recognition: the baseline must not move
        _overwrite_photo(url, r, 255)
    assert torch.equal(fit_class_mean(url).colours, before.colours)
    _overwrite_photo(url, _rows(url, "train")[0], 255)  # …while a train photo does move it
    after = fit_class_mean(url)
    seen = before.pixel_weight > 0
    assert (after.colours[seen] > before.colours[seen] + 1e-3).any()


def test_class_mean_is_the_weighted_mean_colour_per_class(tmp_path):
    url = _store(tmp_path / "s")
    base = fit_class_mean(url, max_width=64)  # level 0 of this 32×64 store
    reader = open_dataset(url)
    H = reader.height
    lat = (0.5 - (np.arange(H) + 0.5) / H) * np.pi
    sums, weights = np.zeros((7, 3)), np.zeros(7)
    for r in _rows(url, "train"):  # independent re-computation, pixel by pixel class masks
        label = reader.read(r, "label")[0]
        real = reader.read(r, "real").astype(np.float64) / 127.5 - 1
        w = np.cos(lat)[:, None] * reader.read(r, "mask", channels=1).astype(bool)
        for c in range(7):
            m = (label == c) * w
            weights[c] += m.sum()
            sums[c] += (real * m).reshape(3, -1).sum(1)
    seen = weights > 0
    np.testing.assert_allclose(base.colours.numpy()[seen], (sums[seen] / weights[seen, None]), atol=1e-5)
    label = torch.tensor([[[0, 5], [2, 2]]])
    pred = base.predict(label)
    assert pred.shape == (1, 3, 2, 2) and torch.equal(pred[0, :, 1, 0], base.colours[2])
    assert torch.equal(pred[0, :, 0, 1], base.colours[5])


def test_nearest_neighbour_returns_the_closest_train_render(tmp_path):
    url = _store(tmp_path / "s")
    nn = fit_nearest_neighbour(url)
    reader = open_dataset(url)
    train = _rows(url, "train")
    assert nn.descriptors.shape[0] == len(train) == len(nn.source_ids)
    for k, r in enumerate(train):  # a train render is its own nearest neighbour
        q = render_descriptor(reader.read(r, "sim"), reader.read(r, "label")[0])
        assert nn.match(q).tolist() == [k]
    # a val render goes to the train render with the smallest descriptor distance (brute force)
    for r in _rows(url, "val"):
        q = render_descriptor(reader.read(r, "sim"), reader.read(r, "label")[0])
        dists = [float(((q - d) ** 2).sum()) for d in nn.descriptors]
        assert nn.match(q).item() == int(np.argmin(dists))


def test_baselines_need_a_train_split(tmp_path):
    url = tmp_path / "s"
    write_synthetic_dataset(url, 2, height=32, chunk_px=32)  # no splits assigned
    with pytest.raises(ValueError, match="no samples in split 'train'"):
        fit_class_mean(url)
