"""Evaluation against baselines on a small store: structure of the results, files, CLI."""

import json

import numpy as np
import pytest
import torch

from s2r_data.store.synthetic import write_synthetic_dataset
from s2r_train.cli import main
from s2r_train.config import EvalConfig
from s2r_train.evaluate import evaluate, format_table, write_eval_outputs
from s2r_train.splits import assign_splits
from s2r_train.trainer import Trainer

from .helpers import one_thread_deterministic_restored, tiny_config  # noqa: F401


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    url = tmp_path_factory.mktemp("ev") / "store"
    write_synthetic_dataset(url, 6, height=32, chunk_px=32, n_sequences=6)
    assign_splits(url, [4, 2, 0], seed=0)
    return url


def _cfg(*extra):
    return tiny_config("data.crop_size=32", "network.generator.arch=unet", "network.generator.unet_levels=4",
                       "network.conditioning.view_direction=true", "eval.crops_per_panorama=3", "eval.fid_crops=0",
                       "eval.pano_width=64", *extra)


class Grey(torch.nn.Module):
    """A "generator" that paints everything mid-grey."""

    downsample_factor = 1

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(()))

    def forward(self, cond, *args):
        return torch.zeros(cond.shape[0], 3, *cond.shape[-2:]) + self.w, None, None


def test_evaluate_scores_models_and_baselines(store, tmp_path):
    cfg = _cfg()
    grey = Grey()
    report = evaluate(str(store), {"grey": grey}, cfg)
    m = report.metrics
    val = m["splits"]["val"]
    assert list(m["splits"]) == ["val"] and val["crops"]["num_panoramas"] == 2 and val["crops"]["num_crops"] == 6
    assert set(val["crops"]["subjects"]) == {"grey", "class_mean", "nearest_neighbour"}
    assert set(val["panoramas"]["subjects"]) == {"grey/tiled", "grey/direct", "class_mean", "nearest_neighbour"}
    for subject in val["crops"]["subjects"].values():
        assert set(subject) == {"l1", "psnr", "ssim"} and all(np.isfinite(v) for v in subject.values())
    # the baselines are real predictors: on this store's flat-coloured classes the class means beat grey
    assert val["crops"]["subjects"]["class_mean"]["l1"] < val["crops"]["subjects"]["grey"]["l1"]
    assert val["panoramas"]["subjects"]["grey/tiled"]["l1"] == pytest.approx(
        val["panoramas"]["subjects"]["grey/direct"]["l1"], abs=1e-4)  # a constant is a constant either way
    from s2r_data.store import open_dataset

    index = open_dataset(store).index.to_pydict()
    train_ids = {i for i, s in zip(index["image_id"], index["split"]) if s == "train"}
    assert len(val["nearest_neighbour_of"]) == 2 and set(val["nearest_neighbour_of"].values()) <= train_ids
    again = evaluate(str(store), {"grey": grey}, cfg)  # fixed crops: the same numbers every time
    assert again.metrics["splits"] == m["splits"]
    table = format_table(m)
    assert "| class_mean |" in table and "| nearest_neighbour |" in table and "| grey |" in table
    paths = write_eval_outputs(report, tmp_path / "eval")
    assert json.loads(paths["json"].read_text())["splits"]["val"]["crops"]["num_crops"] == 6
    assert {"val-crops", "val-panoramas"} <= set(paths) and paths["val-crops"].stat().st_size > 0
    assert "![val-crops](val-crops.png)" in paths["markdown"].read_text()


def test_scored_crops_follow_the_eval_angles_not_the_recipes_training_views(store):
    """Recipes that train on other views (the demo's steeper pitches) are scored on the same crops."""
    no_panos = ("eval.panoramas=false",)
    base = evaluate(str(store), {"grey": Grey()}, _cfg(*no_panos)).metrics["splits"]["val"]["crops"]["subjects"]
    steep_training = evaluate(str(store), {"grey": Grey()}, _cfg("data.pitch_deg=[-60,30]", *no_panos))
    assert steep_training.metrics["splits"]["val"]["crops"]["subjects"] == base
    other_eval = evaluate(str(store), {"grey": Grey()}, _cfg("eval.crop_pitch_deg=[-60,-40]", *no_panos))
    assert other_eval.metrics["splits"]["val"]["crops"]["subjects"]["class_mean"] != base["class_mean"]


def test_in_loop_validation_looks_through_the_eval_angles(store, tmp_path):
    """One val distribution: the trainer's per-epoch val crops use eval.crop_*, not data.* (a recipe
    that trains on steep pitches used to log a val PSNR the evaluation never reproduced)."""
    cfg = _cfg("data.pitch_deg=[-60,-40]", "data.fov_deg=[30,40]", "eval.crop_pitch_deg=[0,10]", "eval.crop_fov_deg=[80,90]",
               "train.val_batches=1")
    tr = Trainer(cfg, run_dir=tmp_path / "run", dataset_url=str(store), max_steps=1, progress=False)
    try:
        assert tr.train_dataset.crop.pitch_deg == (-60.0, -40.0) and tr.train_dataset.crop.fov_deg == (30.0, 40.0)
        assert tr.val_dataset.crop.pitch_deg == (0.0, 10.0) and tr.val_dataset.crop.fov_deg == (80.0, 90.0)
        assert tr.val_dataset.crop.flip_p == 0.0
    finally:
        tr.close()


@pytest.mark.slow
def test_training_ends_with_an_evaluation_and_the_cli_reevaluates(store, tmp_path, capsys):
    cfg = _cfg("eval.fid_crops=4", "train.batch_size=2")
    run = tmp_path / "run"
    tr = Trainer(cfg, run_dir=run, dataset_url=str(store), max_steps=2, progress=False)
    summary = tr.fit()
    tr.close()
    metrics = json.loads((run / "eval" / "metrics.json").read_text())
    assert metrics["step"] == 2 and summary["eval"]["metrics"] == str(run / "eval" / "metrics.json")
    crops = metrics["splits"]["val"]["crops"]
    assert set(crops["subjects"]) == {"model_ema", "model_raw", "class_mean", "nearest_neighbour"}
    assert crops["fid_crops"] == 4 and all("fid" in s and "kid" in s for s in crops["subjects"].values())
    assert (run / "eval" / "val-panoramas.png").exists() and (run / "eval" / "metrics.md").exists()
    ckpt = tr.checkpoints.latest()
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(ckpt), "--dataset", str(store), "--out", str(tmp_path / "cli"),
                 "--fid-crops", "0", "--no-panoramas", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "| model_ema |" in out and "| class_mean |" in out
    cli = json.loads((tmp_path / "cli" / "metrics.json").read_text())
    assert cli["step"] == 2 and "panoramas" not in cli["splits"]["val"]
    for k in ("l1", "psnr", "ssim"):  # the same fixed crops, the same baseline
        assert cli["splits"]["val"]["crops"]["subjects"]["class_mean"][k] == crops["subjects"]["class_mean"][k]
