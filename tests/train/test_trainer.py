"""Trainer behaviour on tiny networks and 64×64 synthetic crops (CPU, one thread)."""

import json

import pytest
import torch
from torch.utils.data import default_collate

from s2r_train.conditioning import condition_from_batch
from s2r_train.synthetic import SyntheticPairDataset
from s2r_train.trainer import NonFiniteTrainingError, Trainer, ema_update

from .helpers import one_thread_deterministic_restored, tiny_config  # noqa: F401


def _trainer(tmp_path, *overrides, dataset=None, name="run", **kw):
    cfg = tiny_config(*overrides)
    ds = dataset if dataset is not None else SyntheticPairDataset(4, crop_size=64)
    return Trainer(cfg, run_dir=tmp_path / name, train_dataset=ds, progress=False, log_tensorboard=False, **kw)


def _batch(n=2, start=0):
    ds = SyntheticPairDataset(8, crop_size=64)
    return default_collate([ds[i] for i in range(start, start + n)])


def _snapshot(tr):
    return {k: v.clone() for k, v in {**{f"G.{k}": v for k, v in tr.G_raw.state_dict().items()},
                                       **{f"D.{k}": v for k, v in tr.D_raw.state_dict().items()}}.items()}


def _run(tr, batch, steps):
    stats = None
    for _ in range(steps):
        stats = tr.train_step(batch)
        tr.step += 1
        tr.nimg += batch["sim"].shape[0]
    return stats


@pytest.mark.slow
def test_overfit_a_handful_of_samples_halves_l1(tmp_path):
    tr = _trainer(tmp_path)
    batch = _batch(2)
    cond = condition_from_batch(batch, tr.net_cfg.conditioning, "cpu")
    l1_before = (tr.predict(cond, tr.G_raw) - batch["real"]).abs().mean().item()
    _run(tr, batch, 150)
    l1_after = (tr.predict(cond, tr.G_raw) - batch["real"]).abs().mean().item()
    assert l1_after < 0.5 * l1_before, (l1_before, l1_after)
    assert tr.nonfinite_total == 0


def _full_state(tr):
    sd = tr.state_dict()
    flat = {}

    def walk(prefix, obj):
        if isinstance(obj, dict):
            for k, v in obj.items():
                walk(f"{prefix}.{k}", v)
        elif isinstance(obj, (list, tuple)):
            for i, v in enumerate(obj):
                walk(f"{prefix}.{i}", v)
        elif isinstance(obj, torch.Tensor):
            flat[prefix] = obj
        else:
            flat[prefix] = obj
    for key in ("G", "D", "G_ema", "opt_g", "opt_d", "step", "nimg", "epoch"):
        walk(key, sd[key])
    return flat


def test_resume_is_bitwise_exact(tmp_path):
    # 6 items, batch 2: 3 steps/epoch, so 2 + 2 crosses an epoch boundary (reshuffle, samples)
    over = ("train.num_vis_samples=2", "train.deterministic=true")
    ds = SyntheticPairDataset(6, crop_size=64)
    a = _trainer(tmp_path, *over, dataset=ds, name="a", max_steps=4)
    a.fit()
    b1 = _trainer(tmp_path, *over, dataset=ds, name="b", max_steps=2)
    b1.fit()
    assert b1.checkpoints.latest().name == "checkpoint-step000000002.pt"  # named by optimizer step
    del b1
    b2 = _trainer(tmp_path, *over, dataset=ds, name="b", max_steps=4)  # auto-resumes from the run dir
    assert b2.step == 2
    b2.fit()
    sa, sb = _full_state(a), _full_state(b2)
    assert sa.keys() == sb.keys()
    for k in sa:
        if isinstance(sa[k], torch.Tensor):
            assert torch.equal(sa[k], sb[k]), k
        else:
            assert sa[k] == sb[k], k
    assert (tmp_path / "a" / "samples" / "epoch-0000.png").exists()


def test_nan_batch_is_skipped_not_propagated(tmp_path):
    tr = _trainer(tmp_path)
    batch = _batch(2)
    _run(tr, batch, 1)
    before = _snapshot(tr)
    bad = dict(batch, sim=batch["sim"].clone())
    bad["sim"][0, 0, 5, 5] = float("nan")
    stats = tr.train_step(bad)
    assert stats["skipped"] == 1.0 and tr.nonfinite_total == 1
    after = _snapshot(tr)
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(torch.isfinite(v).all() for v in after.values() if v.is_floating_point())
    stats = tr.train_step(batch)  # training continues normally
    assert stats["skipped"] == 0.0 and tr.nonfinite_consecutive == 0
    assert any(not torch.equal(before[k], v) for k, v in _snapshot(tr).items())


@pytest.mark.parametrize("overrides", [(), ("network.generator.arch=unet", "network.generator.unet_levels=4",
                                              "network.generator.norm=batch")])
def test_nonfinite_gradient_skips_and_repeated_failures_stop(tmp_path, overrides):
    tr = _trainer(tmp_path, "train.max_nonfinite_steps=3", *overrides)
    batch = _batch(2)
    _run(tr, batch, 1)
    last = tr.G_raw.to_rgb if hasattr(tr.G_raw, "to_rgb") else tr.G_raw.up[-1]
    handle = last.register_forward_hook(lambda m, i, o: o * float("nan"))
    params = [p.detach().clone() for p in list(tr.G_raw.parameters()) + list(tr.D_raw.parameters())]
    adam = [v.clone() for st in tr.opt_g.state.values() for v in st.values()]
    assert tr.train_step(batch)["skipped"] == 1.0
    # no update reached weights or optimiser state; buffers (BN stats, spectral-norm u/v) stay finite
    now = list(tr.G_raw.parameters()) + list(tr.D_raw.parameters())
    assert all(torch.equal(a, b) for a, b in zip(params, now))
    assert all(torch.equal(a, b) for a, b in zip(adam, [v for st in tr.opt_g.state.values() for v in st.values()]))
    assert all(torch.isfinite(b).all() for b in list(tr.G_raw.buffers()) + list(tr.D_raw.buffers()))
    assert tr.train_step(batch)["skipped"] == 1.0
    with pytest.raises(NonFiniteTrainingError, match="3 consecutive updates were skipped"):
        tr.train_step(batch)
    handle.remove()
    tr.nonfinite_consecutive = 0
    assert tr.train_step(batch)["skipped"] == 0.0


@pytest.mark.slow
def test_bf16_stays_finite_and_close_to_fp32(tmp_path):
    steps = 100
    batch = _batch(2)
    preds = {}
    for prec in ("fp32", "bf16"):
        tr = _trainer(tmp_path, f"train.precision={prec}", "train.deterministic=false", name=prec)
        stats = _run(tr, batch, steps)
        assert tr.nonfinite_total == 0 and all(torch.isfinite(torch.tensor(v)) for v in stats.values())
        cond = condition_from_batch(batch, tr.net_cfg.conditioning, "cpu")
        preds[prec] = tr.predict(cond, tr.G_raw)
        assert torch.isfinite(preds[prec]).all()
        preds[prec + "_l1"] = (preds[prec] - batch["real"]).abs().mean().item()
    mse = ((preds["fp32"] - preds["bf16"]) / 2).pow(2).mean().item()
    psnr_between = 10 * torch.log10(torch.tensor(1.0 / mse)).item()
    print(f"bf16 vs fp32 after {steps} steps: PSNR {psnr_between:.1f} dB, L1 {preds['fp32_l1']:.4f} vs {preds['bf16_l1']:.4f}")
    assert psnr_between > 20.0, psnr_between
    assert abs(preds["fp32_l1"] - preds["bf16_l1"]) < 0.05, preds


def test_ema_update_math_and_start(tmp_path):
    a, b = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    expect = 0.9 * a.weight.detach() + 0.1 * b.weight.detach()
    ema_update(a, b, 0.9)
    assert torch.allclose(a.weight, expect)
    ema_update(a, b, 0.0)
    assert torch.equal(a.weight, b.weight)

    tr = _trainer(tmp_path, "train.ema_start_nimg=4", "train.ema_beta=0.5")
    batch = _batch(2)
    _run(tr, batch, 1)  # nimg 0 < 4: G_ema copies G
    for pe, p in zip(tr.G_ema.parameters(), tr.G_raw.parameters()):
        assert torch.equal(pe, p)
    _run(tr, batch, 1)  # nimg 2: still copying
    old = [p.clone() for p in tr.G_ema.parameters()]
    _run(tr, batch, 1)  # nimg 4: averaging with beta 0.5
    for pe, po, p in zip(tr.G_ema.parameters(), old, tr.G_raw.parameters()):
        assert torch.allclose(pe, 0.5 * po + 0.5 * p, atol=1e-6)
    assert any(not torch.equal(pe, p) for pe, p in zip(tr.G_ema.parameters(), tr.G_raw.parameters()))


@pytest.mark.parametrize("overrides", [
    ("train.mode=cycle", "train.lambda_l1=0.0", "train.gan_loss=ls"),
    ("network.generator.arch=unet", "network.generator.unet_levels=5", "network.generator.norm=batch",
     "train.gan_loss=bce", "network.discriminator.num_scales=1"),
    ("network.generator.use_vae=true", "network.generator.z_dim=8", "train.d_steps_per_g=2"),
    ("train.l1_alignment_weighting=true", "network.conditioning.label_onehot=true",
     "network.conditioning.normals_frame=camera"),
])
def test_variants_take_finite_steps(tmp_path, overrides):
    tr = _trainer(tmp_path, *overrides)
    batch = _batch(2)
    batch["alignment"] = torch.tensor([1.0, 0.25])
    before = _snapshot(tr)
    stats = _run(tr, batch, 2)
    assert stats["skipped"] == 0.0 and all(torch.isfinite(torch.tensor(v)) for v in stats.values())
    assert any(not torch.equal(before[k], v) for k, v in _snapshot(tr).items())
    if "network.generator.use_vae=true" in overrides:
        assert stats["g_kl"] >= 0


def test_fit_writes_run_dir(tmp_path):
    cfg = tiny_config("train.epochs=2", "train.num_vis_samples=2", "train.val_batches=1", "train.log_every_steps=1",
                      "train.keep_last=1")
    tr = Trainer(cfg, run_dir=tmp_path / "run", dataset_url="synthetic://4", progress=False)
    summary = tr.fit()
    tr.close()
    run = tmp_path / "run"
    assert summary["epoch"] == 2 and summary["nimg"] == 8
    assert (run / "config.yaml").read_text().startswith("network:")
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["checkpoint-step000000004.pt"]
    assert {p.name for p in (run / "samples").iterdir()} == {"sim.png", "epoch-0000.png", "epoch-0001.png"}
    recs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert {r["split"] for r in recs} == {"train", "val"}
    assert all("psnr" in r and "d_acc_real" in r for r in recs)
    assert list((run / "tb").glob("events.out.tfevents.*"))
    # rerunning the same command after the end does no more steps
    tr2 = Trainer(cfg, run_dir=run, dataset_url="synthetic://4", progress=False, log_tensorboard=False)
    assert tr2.fit()["step"] == summary["step"]


def test_l1_warm_up_leaves_d_alone_until_adversarial_start(tmp_path):
    tr = _trainer(tmp_path, "train.adversarial_start_nimg=4")
    batch = _batch(2)
    d0 = {k: v.clone() for k, v in tr.D_raw.state_dict().items()}
    g0 = [p.clone() for p in tr.G_raw.parameters()]
    stats = _run(tr, batch, 2)  # nimg 0 and 2: L1 only
    assert "loss_d" not in stats and "g_adv" not in stats and stats["g_l1"] > 0 and stats["skipped"] == 0
    assert all(torch.equal(v, tr.D_raw.state_dict()[k]) for k, v in d0.items())  # D untouched (spectral u too)
    assert any(not torch.equal(a, b) for a, b in zip(g0, tr.G_raw.parameters()))  # G learns
    stats = _run(tr, batch, 1)  # nimg 4: adversarial terms on
    assert "loss_d" in stats and "g_adv" in stats and "g_feat" in stats
    assert any(not torch.equal(v, tr.D_raw.state_dict()[k]) for k, v in d0.items())


def test_l2_only_warm_up_trains_g_on_the_squared_error(tmp_path):
    tr = _trainer(tmp_path, "train.adversarial_start_nimg=4", "train.lambda_l1=0", "train.lambda_l2=10")
    g0 = [p.clone() for p in tr.G_raw.parameters()]
    stats = _run(tr, _batch(2), 1)
    assert "g_l1" not in stats and stats["g_l2"] > 0 and stats["loss_g"] == pytest.approx(stats["g_l2"])
    assert any(not torch.equal(a, b) for a, b in zip(g0, tr.G_raw.parameters()))
    with pytest.raises(ValueError, match="lambda_l1, lambda_l2 or lambda_vgg"):
        tiny_config("train.adversarial_start_nimg=4", "train.lambda_l1=0", "train.lambda_l2=0")


def test_samples_and_val_every_n_epochs(tmp_path):
    cfg = tiny_config("train.epochs=4", "train.samples_every_epochs=2", "train.num_vis_samples=1", "train.val_batches=1")
    tr = Trainer(cfg, run_dir=tmp_path / "run", dataset_url="synthetic://4", progress=False, log_tensorboard=False)
    tr.fit()
    assert sorted(p.name for p in (tmp_path / "run" / "samples").glob("epoch-*.png")) == ["epoch-0001.png",
                                                                                         "epoch-0003.png"]
    recs = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in recs if r["split"] == "val"] == [1, 3]
