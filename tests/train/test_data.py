"""PanoCropDataset: item contract, pair alignment under every augmentation, flips, normals,
determinism, quarantine of damaged samples, pickling/DataLoader workers, pyramid anti-aliasing."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
import torch

from s2r_data import equirect
from s2r_data.poses import rotation_from_heading_pitch_roll
from s2r_data.store import DatasetWriter
from s2r_data.store.synthetic import write_synthetic_dataset
from s2r_train import crops
from s2r_train.data import CropConfig, CropView, NonFiniteCropError, PanoCropDataset, make_dataloader
from s2r_train.splits import assign_splits

POSE_R = rotation_from_heading_pitch_roll(30.0, 3.0, -2.0)
MARKER_AZ_EL = (40.0, 15.0)  # degrees, panorama frame


def _pano_rays_local(H, W):
    py, px = np.mgrid[0:H, 0:W]
    b = equirect.pixel_to_bearing(px, py, W, H)  # (H, W, 3) cam_opensfm
    return b, b @ POSE_R  # local_m


def _custom_store(path, H, kind):
    """One-sample stores with hand-made content (all non-sky unless 'stripes')."""
    W = 2 * H
    b_cam, b_local = _pano_rays_local(H, W)
    label = np.full((1, H, W), 5, np.uint8)
    sim = np.zeros((7, H, W), np.float32)
    real = np.zeros((3, H, W), np.uint8)
    sim[6] = 10.0
    sim[3:6] = -b_local.transpose(2, 0, 1)  # a sphere around the camera: normals face the camera
    if kind == "marker":
        az, el = MARKER_AZ_EL
        d = np.array([math.cos(math.radians(el)) * math.sin(math.radians(az)), -math.sin(math.radians(el)),
                      math.cos(math.radians(el)) * math.cos(math.radians(az))])
        ang = np.degrees(np.arccos(np.clip(b_cam @ d, -1, 1)))
        disk = ang < 2.0
        sim[0][disk] = 1.0
        real[0][disk] = 255
        label[0][disk] = 6
    elif kind == "stripes":
        sim[0] = (np.arange(W) % 2)[None, :].astype(np.float32)
    elif kind == "depth":
        sim[6] = np.where(np.arange(W)[None, :] < W // 2, 50.0, 300.0)
    sky = np.zeros((1, H, W), bool)
    with DatasetWriter(path, height=H, width=W, city="t", pyramid_levels=1, chunk_px=32) as w:
        w.write_sample("m0", sim, label, real, sky, np.ones((1, H, W), bool),
                       {"R_world_to_cam_opensfm": POSE_R.reshape(-1).tolist(), "sequence_id": "s"})
    return path


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    url = tmp_path_factory.mktemp("data") / "synth"
    write_synthetic_dataset(url, 6, height=64, chunk_px=32)
    assign_splits(url, [0.5, 0.5, 2], seed=0)
    return url


@pytest.fixture(scope="module")
def marker(tmp_path_factory):
    return _custom_store(tmp_path_factory.mktemp("data") / "marker", 256, "marker")


def test_item_contract(synth):
    ds = PanoCropDataset(synth, split=None, crop=CropConfig(out_size=48), seed=3)
    assert len(ds) == 6
    for i in range(len(ds)):
        it = ds[i]
        assert it["sim"].shape == (7, 48, 48) and it["sim"].dtype == torch.float32
        assert it["real"].shape == (3, 48, 48) and it["real"].dtype == torch.float32
        assert it["label"].shape == (48, 48) and it["label"].dtype == torch.int64
        assert it["sky"].shape == (1, 48, 48) and it["valid"].shape == (1, 48, 48)
        sim, real = it["sim"], it["real"]
        assert 0 <= sim[0:3].min() and sim[0:3].max() <= 1
        assert -1 <= sim[3:6].min() and sim[3:6].max() <= 1
        assert 0 <= sim[6].min() and sim[6].max() <= 1
        assert -1 <= real.min() and real.max() <= 1
        sky = it["sky"][0].bool()
        assert torch.equal(sky, it["label"] == 0)
        assert (sim[3:7][:, sky] == 0).all()  # sky: normal 0, depth 0
        n = torch.linalg.vector_norm(sim[3:6], dim=0)[~sky]
        assert torch.allclose(n, torch.ones_like(n), atol=1e-3)  # unit normals on surfaces
        m = it["meta"]
        assert m["image_id"] == ds.image_ids[i] and 0 <= m["yaw_deg"] < 360 and 0 <= m["pitch_deg"] <= 60
        assert 60 <= m["fov_deg"] <= 120 and isinstance(m["flip"], bool) and m["quarantined"] == ""


def test_depth_uses_the_fixed_range(tmp_path):
    url = _custom_store(tmp_path / "d", 32, "depth")
    ds = PanoCropDataset(url, split=None, crop=CropConfig(out_size=16), depth_range_m=(0.0, 200.0))
    near = ds.crop_view(0, CropView(-60.0 % 360, 0.0, 30.0, False))  # left half: 50 m
    far = ds.crop_view(0, CropView(60.0, 0.0, 30.0, False))  # right half: 300 m
    assert torch.allclose(near["sim"][6], torch.full((16, 16), 0.25), atol=1e-3)
    assert torch.allclose(far["sim"][6], torch.ones(16, 16))  # clipped, not divided by a per-image max


def _centroid(img):
    w = img.double()
    ii, jj = torch.meshgrid(torch.arange(img.shape[0]), torch.arange(img.shape[1]), indexing="ij")
    return float((w * ii).sum() / w.sum()), float((w * jj).sum() / w.sum())


def test_pair_alignment_survives_every_augmentation(marker):
    n = 64
    ds = PanoCropDataset(marker, split=None, crop=CropConfig(out_size=n))
    rng = np.random.default_rng(0)
    az, el = MARKER_AZ_EL
    d = np.array([math.cos(math.radians(el)) * math.sin(math.radians(az)), -math.sin(math.radians(el)),
                  math.cos(math.radians(el)) * math.cos(math.radians(az))])
    seen_flip = set()
    for k in range(24):
        view = CropView((az + rng.uniform(-12, 12)) % 360, el + rng.uniform(-12, 12), rng.uniform(60, 120), bool(k % 2))
        it = ds.crop_view(0, view)
        c_sim = _centroid(it["sim"][0])
        c_real = _centroid((it["real"][0] + 1) / 2)
        c_lab = _centroid((it["label"] == 6).float())
        # expected: pinhole projection of the marker direction (mirrored when flipped)
        c = crops.crop_rotation(view.yaw_deg, view.pitch_deg).T @ d
        f = (n / 2) / math.tan(math.radians(view.fov_deg) / 2)
        u, v = f * c[0] / c[2] + (n - 1) / 2, f * c[1] / c[2] + (n - 1) / 2
        if view.flip:
            u = n - 1 - u
        assert c_sim == pytest.approx(c_real, abs=0.02), view  # same map for sim and photo
        assert c_lab == pytest.approx(c_sim, abs=0.6), view
        assert c_sim == pytest.approx((v, u), abs=0.75), view
        seen_flip.add(view.flip)
    assert seen_flip == {True, False}


def test_flip_mirrors_every_channel_and_reflects_normals(marker):
    ds = PanoCropDataset(marker, split=None, crop=CropConfig(out_size=40))
    for view in (CropView(33.0, 10.0, 90.0, False), CropView(300.0, 55.0, 120.0, False)):
        a = ds.crop_view(0, view)
        b = ds.crop_view(0, CropView(view.yaw_deg, view.pitch_deg, view.fov_deg, True))
        for key in ("real", "label", "sky", "valid"):
            assert torch.equal(b[key], a[key].flip(-1)), key
        assert torch.equal(b["sim"][[0, 1, 2, 6]], a["sim"][[0, 1, 2, 6]].flip(-1))
        axis = crops.crop_right_axis_local(POSE_R, view.yaw_deg, view.pitch_deg)
        want = crops.reflect_normals(a["sim"][3:6].flip(-1).numpy(), axis)
        np.testing.assert_allclose(b["sim"][3:6].numpy(), want, atol=1e-5)


def test_flipped_normals_are_consistent_with_the_flipped_view(marker):
    """Mirrored-world convention: the store's normals face the camera (a sphere around it), so in
    ANY view, flipped or not, a pixel's normal must be minus its own view ray (in local_m)."""
    n = 32
    ds = PanoCropDataset(marker, split=None, crop=CropConfig(out_size=n))
    for view in (CropView(10.0, 5.0, 90.0, True), CropView(10.0, 5.0, 90.0, False), CropView(250.0, 40.0, 70.0, True)):
        it = ds.crop_view(0, view)
        rays_crop = crops.crop_rays(view.fov_deg, n, n)
        rays_local = rays_crop @ crops.crop_rotation(view.yaw_deg, view.pitch_deg).T @ POSE_R
        rays_local /= np.linalg.norm(rays_local, axis=-1, keepdims=True)
        got = it["sim"][3:6].numpy().transpose(1, 2, 0)
        err = np.abs(got + rays_local).max()
        assert err < 0.03, (view, err)
        if view.flip:  # without the reflection the right-axis component would be wrong
            axis = crops.crop_right_axis_local(POSE_R, view.yaw_deg, view.pitch_deg)
            unreflected = crops.reflect_normals(it["sim"][3:6].numpy(), axis).transpose(1, 2, 0)
            assert np.abs(unreflected + rays_local).max() > 0.3


def test_deterministic_views_and_fresh_random_views(synth):
    a = PanoCropDataset(synth, split="val", crop=CropConfig(out_size=24), seed=7, deterministic=True)
    b = PanoCropDataset(synth, split="val", crop=CropConfig(out_size=24), seed=7, deterministic=True)
    for i in range(len(a)):
        x, y = a[i], b[i]
        R = "R_world_to_cam_opensfm"
        assert torch.equal(x["meta"][R], y["meta"][R]) and x["meta"][R].shape == (3, 3)
        assert {k: v for k, v in x["meta"].items() if k != R} == {k: v for k, v in y["meta"].items() if k != R}
        assert torch.equal(x["sim"], y["sim"]) and torch.equal(x["real"], y["real"])
        assert torch.equal(a[i]["sim"], x["sim"])  # same item again: same crop
    assert a[0]["meta"]["yaw_deg"] != a[1]["meta"]["yaw_deg"]
    c = PanoCropDataset(synth, split="val", crop=CropConfig(out_size=24), seed=7, deterministic=False)
    assert len({c[0]["meta"]["yaw_deg"] for _ in range(4)}) == 4


def test_splits_filter_rows(synth):
    tr = PanoCropDataset(synth, split="train", crop=CropConfig(out_size=16))
    va = PanoCropDataset(synth, split="val", crop=CropConfig(out_size=16))
    vis = PanoCropDataset(synth, split="vis", crop=CropConfig(out_size=16), deterministic=True)
    assert len(tr) + len(va) == 6 and not set(tr.image_ids) & set(va.image_ids)
    assert len(vis) == 2 and set(vis.image_ids) <= set(va.image_ids)
    with pytest.raises(ValueError, match="no samples in split 'test'"):
        PanoCropDataset(synth, split="test")


def test_a_non_finite_crop_quarantines_its_sample_and_a_healthy_one_stands_in(synth, monkeypatch):
    ds = PanoCropDataset(synth, split=None, crop=CropConfig(out_size=16), deterministic=True)
    real_crop = ds.crop_view
    calls = []

    def damaged_1(index, view, out=None):
        calls.append(index)
        return None if index == 1 else real_crop(index, view, out=out)

    monkeypatch.setattr(ds, "crop_view", damaged_1)
    it = ds[1]
    assert it["meta"]["image_id"] == ds.image_ids[2] and it["meta"]["quarantined"] == ds.image_ids[1]
    assert ds.quarantined == {1} and calls == [1, 2] and torch.isfinite(it["sim"]).all()
    calls.clear()
    again = ds[1]  # never read again: straight to the stand-in, still reported
    assert calls == [2] and again["meta"]["quarantined"] == ds.image_ids[1]
    assert ds[0]["meta"]["quarantined"] == "" and ds[0]["meta"]["image_id"] == ds.image_ids[0]
    batch = ds[[0, 1]]  # batches built in place report per item
    assert list(batch["meta"]["quarantined"]) == ["", ds.image_ids[1]]
    monkeypatch.setattr(ds, "crop_view", lambda i, v, out=None: None)
    with pytest.raises(NonFiniteCropError, match="every one of the 6 samples"):
        ds[3]


def _corrupt(url, rows):
    """NaN into the stored depth of samples ``rows`` (every pyramid level), after writing."""
    import zarr

    from s2r_data.store import open_dataset

    reader = open_dataset(url)
    g = zarr.open_group(str(url / "data.zarr"), mode="r+")
    for row in rows:
        z = reader.zarr_index(row)
        for name in ("sim", "sim_l1"):
            s = g[name][z]
            s[6] = np.nan
            g[name][z] = s


def test_nan_in_the_store_is_never_yielded(tmp_path):
    url = tmp_path / "n"
    write_synthetic_dataset(url, 5, height=32, chunk_px=32)
    _corrupt(url, [2])
    ds = PanoCropDataset(url, split=None, crop=CropConfig(out_size=8))
    items = [ds[i] for i in range(5)]
    assert all(torch.isfinite(it["sim"]).all() for it in items)
    assert ds.image_ids[2] not in [it["meta"]["image_id"] for it in items]
    assert [it["meta"]["quarantined"] for it in items] == ["", "", ds.image_ids[2], "", ""]
    known = PanoCropDataset(url, split=None, crop=CropConfig(out_size=8), quarantined=[ds.image_ids[2], "other"])
    assert known.quarantined == {2}  # a resumed run's list: ids of other splits are ignored
    _corrupt(url, [0, 1, 3, 4])
    with pytest.raises(NonFiniteCropError, match="every one of the 5 samples"):
        PanoCropDataset(url, split=None, crop=CropConfig(out_size=8))[0]


def test_make_dataloader_refuses_a_batch_it_can_never_fill(synth):
    ds = PanoCropDataset(synth, split="train", crop=CropConfig(out_size=8))
    n = len(ds)
    with pytest.raises(ValueError, match=rf"{n} samples.*batch_size={n + 1}.*no batch"):
        make_dataloader(ds, batch_size=n + 1, num_workers=0, drop_last=True)
    assert len(list(make_dataloader(ds, batch_size=n + 1, num_workers=0, drop_last=False))) == 1
    assert len(list(make_dataloader(ds, batch_size=n, num_workers=0, drop_last=True))) == 1


def test_pyramid_level_prevents_aliasing(tmp_path):
    url = _custom_store(tmp_path / "s", 128, "stripes")  # 1-px DiffCol stripes: worst case
    view = CropView(0.0, 0.0, 120.0, False)  # 32-px crop of 120°: ~2.7 panorama px per crop px
    with_pyr = PanoCropDataset(url, split=None, crop=CropConfig(out_size=32)).crop_view(0, view)
    without = PanoCropDataset(url, split=None, crop=CropConfig(out_size=32, use_pyramid=False)).crop_view(0, view)
    assert with_pyr["meta"]["level"] == 1 and without["meta"]["level"] == 0
    assert float(with_pyr["sim"][0].std()) < 0.05  # pre-filtered: a flat 0.5
    assert float(without["sim"][0].std()) > 0.2  # aliased moiré
    assert float(with_pyr["sim"][0].mean()) == pytest.approx(0.5, abs=0.02)


def test_batches_are_the_collated_items(synth):
    """ds[list of indices] (how make_dataloader's workers build batches in place) = default_collate
    of the items, for float and compact items."""
    from torch.utils.data import default_collate

    for compact in (False, True):
        ds = PanoCropDataset(synth, split=None, crop=CropConfig(out_size=24), seed=3, deterministic=True, compact=compact)
        idx = [4, 0, 2, 4]
        got, want = ds[idx], default_collate([ds[i] for i in idx])
        assert set(got) == set(want) and set(got["meta"]) == set(want["meta"])
        for key, value in want.items():
            if key != "meta":
                assert got[key].dtype == value.dtype and torch.equal(got[key], value), (compact, key)
        for key, value in want["meta"].items():
            g = got["meta"][key]
            assert torch.equal(g, value) if isinstance(value, torch.Tensor) else g == value, (compact, key)


@pytest.mark.slow
def test_pickles_and_runs_in_worker_processes(synth):
    ds = PanoCropDataset(synth, split=None, crop=CropConfig(out_size=16), seed=1)
    ds[0]  # opens the store in this process
    clone = pickle.loads(pickle.dumps(ds))
    assert clone._reader is None and torch.equal(clone.crop_view(0, CropView(1, 2, 90, False))["sim"],
                                                 ds.crop_view(0, CropView(1, 2, 90, False))["sim"])
    loader = make_dataloader(ds, batch_size=3, num_workers=2, shuffle=False, multiprocessing_context="spawn")
    batches = list(loader)
    assert len(batches) == 2
    b = batches[0]
    assert b["sim"].shape == (3, 7, 16, 16) and b["label"].dtype == torch.int64
    assert list(b["meta"]["image_id"]) == ds.image_ids[:3]
    assert torch.isfinite(b["sim"]).all()


def test_batched_torch_path_matches_the_loader(marker):
    """crops.crop_batch_torch (the GPU route) gives the loader's items for the same views."""
    from s2r_data.store import open_dataset

    n = 32
    ds = PanoCropDataset(marker, split=None, crop=CropConfig(out_size=n, use_pyramid=False))
    r = open_dataset(marker)
    sim = torch.from_numpy(r.read(0, "sim"))[None].expand(3, -1, -1, -1)
    real = torch.from_numpy(r.read(0, "real"))[None].expand(3, -1, -1, -1)
    label = torch.from_numpy(r.read(0, "label"))[None].expand(3, -1, -1, -1)
    views = [CropView(40.0, 15.0, 90.0, False), CropView(40.0, 15.0, 90.0, True), CropView(300.0, 70.0, 120.0, True)]
    got = crops.crop_batch_torch(sim, real, label, torch.from_numpy(POSE_R)[None].expand(3, -1, -1),
                                 [v.yaw_deg for v in views], [v.pitch_deg for v in views], [v.fov_deg for v in views],
                                 [v.flip for v in views], n)
    for b, v in enumerate(views):
        want = ds.crop_view(0, v)
        np.testing.assert_allclose(got["sim"][b].numpy(), want["sim"].numpy(), atol=2e-3)
        np.testing.assert_allclose(got["real"][b].numpy(), want["real"].numpy(), atol=1 / 127.5 + 1e-5)  # 8-bit rounding
        assert (got["label"][b] != want["label"]).float().mean() < 0.01


def test_compact_items_decode_to_the_float_items(synth):
    from torch.utils.data import default_collate

    from s2r_train.data import decode_batch

    full = PanoCropDataset(synth, split=None, crop=CropConfig(out_size=32), seed=5, deterministic=True)
    small = PanoCropDataset(synth, split=None, crop=CropConfig(out_size=32), seed=5, deterministic=True, compact=True)
    a, b = full[1], small[1]
    assert b["sim"].dtype == torch.float16 and b["real"].dtype == torch.uint8
    assert b["label"].dtype == b["valid"].dtype == torch.uint8 and "sky" not in b  # sky = label 0
    assert sum(t.numel() * t.element_size() for k, t in b.items() if k != "meta") < 0.4 * sum(
        t.numel() * t.element_size() for k, t in a.items() if k != "meta")
    fa, fb = decode_batch(default_collate([a])), decode_batch(default_collate([b]))
    for key in ("real", "label", "sky", "valid"):
        assert fb[key].dtype == fa[key].dtype and torch.equal(fb[key], fa[key]), key
    assert fb["sim"].dtype == torch.float32 and torch.allclose(fb["sim"], fa["sim"], atol=1e-3)
    plain = default_collate([a])
    assert all(torch.equal(decode_batch(plain)[k], plain[k]) for k in ("sim", "real", "label"))  # float batches pass through
