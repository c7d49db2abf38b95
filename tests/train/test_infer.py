import numpy as np
import pytest
import torch
from PIL import Image

from s2r_train.cli import main
from s2r_train.infer import (
    load_generator,
    perspective_grid,
    sample_perspective,
    training_pano_width,
    translate,
    translate_tiled,
)
from s2r_train.synthetic import SyntheticPairDataset
from s2r_train.trainer import Trainer

from .helpers import one_thread_deterministic_restored, tiny_config  # noqa: F401


@pytest.fixture
def checkpoint(tmp_path):
    cfg = tiny_config()
    tr = Trainer(cfg, run_dir=tmp_path / "run", train_dataset=SyntheticPairDataset(4, crop_size=64), progress=False,
                 log_tensorboard=False, max_steps=1)
    tr.fit()
    return tr.checkpoints.latest()


def _write_render_dir(path, h=64, w=128):
    path.mkdir()
    rng = np.random.default_rng(0)
    sky = np.zeros((1, h, w), bool)
    sky[:, : h // 3] = True
    depth = np.where(sky, 0.0, rng.uniform(2, 150, (1, h, w))).astype(np.float32)
    np.savez(path / "img001.npz", diffcol=rng.uniform(0, 1, (3, h, w)).astype(np.float16),
             normal=rng.uniform(-1, 1, (3, h, w)).astype(np.float16), depth_m=depth,
             label=rng.integers(0, 7, (1, h, w)).astype(np.uint8), sky_mask=sky)


def test_panorama_full_tiled_and_views(tmp_path, checkpoint):
    render = tmp_path / "render"
    _write_render_dir(render, h=80, w=160)  # not a multiple of 32: padded (wrapping) and cropped back
    out = tmp_path / "out"
    assert main(["infer", "--checkpoint", str(checkpoint), "--input", str(render), "--out", str(out),
                 "--pano-width", "160"]) == 0
    im = Image.open(out / "img001.png")
    assert im.size == (160, 80)
    # default: translated at the training crops' angular resolution, written back at the render's size
    assert main(["infer", "--checkpoint", str(checkpoint), "--input", str(render), "--out", str(tmp_path / "matched")]) == 0
    assert Image.open(tmp_path / "matched" / "img001.png").size == (160, 80)
    assert main(["infer", "--checkpoint", str(checkpoint), "--input", str(render), "--out", str(tmp_path / "tiled"),
                 "--tile", "64", "--overlap", "16"]) == 0
    assert Image.open(tmp_path / "tiled" / "img001.png").size == (160, 80)
    assert main(["infer", "--checkpoint", str(checkpoint), "--input", str(render), "--out", str(tmp_path / "views"),
                 "--mode", "views", "--yaw-deg", "0", "90", "--size", "64", "--fov-deg", "80"]) == 0
    views = sorted(p.name for p in (tmp_path / "views").iterdir())
    assert len(views) == 2 and all(Image.open(tmp_path / "views" / v).size == (64, 64) for v in views)


def test_dataset_input(tmp_path, checkpoint):
    out = tmp_path / "ds_out"
    assert main(["infer", "--checkpoint", str(checkpoint), "--input", "synthetic://3", "--out", str(out),
                 "--split", "val"]) == 0
    assert len(list(out.glob("synthetic-*.png"))) == 3


def test_tiled_equals_full_for_a_single_tile_and_wraps(checkpoint):
    G, cfg = load_generator(checkpoint)
    cond = torch.rand(1, cfg.network.conditioning.in_channels, 64, 64)
    full = translate(G, cond)
    tiled = translate_tiled(G, cond, tile=64, overlap=0, wrap=False)
    assert torch.allclose(full, tiled, atol=1e-6)


def test_perspective_grid_centre_looks_at_yaw():
    h, w = 32, 64
    # a panorama whose value is the column index: the view centre at yaw 0 hits column (w-1)/2
    pano = torch.arange(w, dtype=torch.float32).view(1, 1, 1, w).expand(1, 1, h, w)
    for yaw, col in ((0.0, (w - 1) / 2), (90.0, (w - 1) / 2 + w / 4)):
        grid = perspective_grid(pano_hw=(h, w), size=9, fov_deg=60, yaw_deg=yaw, pitch_deg=0.0)
        view = sample_perspective(pano, grid)
        assert view[0, 0, 4, 4].item() == pytest.approx(col, abs=1e-3)


def test_training_pano_width_matches_crop_angular_resolution():
    cfg = tiny_config()  # 64-px crops
    lo, hi = cfg.data.fov_deg
    w = training_pano_width(cfg)
    assert w % 16 == 0 and abs(w / 360 - 64 / ((lo + hi) / 2)) < 16 / 360


def test_resized_passes_keep_sky_and_labels_consistent():
    from s2r_train.panorama import PanoPasses

    h, w = 64, 128
    label = torch.randint(1, 7, (h, w))
    label[:20] = 0
    sim = torch.rand(7, h, w) * (label != 0).float()
    sim[6] *= 100.0  # metres
    out = PanoPasses(sim, label).resized(64)
    assert out.sim_m.shape == (7, 32, 64) and out.label.shape == (32, 64)
    assert ((out.sim_m == 0).all(0) == (out.label == 0)).all()  # sky is 0 in every channel, nowhere else
    # depth is averaged over non-sky pixels only: no half-depth halo at the skyline
    assert out.sim_m[6, 10].abs().sum() > 0 and float(out.sim_m[6][out.label != 0].min()) > 0
    assert PanoPasses(sim, label).resized(128).sim_m is sim
