import dataclasses

import pytest
import yaml

from s2r_train.config import (PRESET_DIR, Config, ConfigError, config_from_dict, config_to_dict, config_to_yaml,
                              load_config)


@pytest.mark.parametrize("name", ["thesis", "s2r", "tiny"])
def test_presets_load_and_round_trip(name):
    cfg = load_config(name)
    assert isinstance(cfg, Config)
    again = config_from_dict(yaml.safe_load(config_to_yaml(cfg)))
    assert again == cfg
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.train.batch_size = 3  # type: ignore[misc]


def test_recipes_match_the_brief():
    thesis, s2r = load_config("thesis"), load_config("s2r")
    assert (thesis.network.generator.arch, thesis.network.discriminator.num_scales) == ("spade", 1)
    assert thesis.train.gan_loss == "bce" and thesis.train.betas_g[0] == 0.0 and thesis.train.batch_size == 2
    assert thesis.network.discriminator.n_layers == 3
    assert s2r.train.gan_loss == "hinge" and s2r.network.discriminator.num_scales == 2
    assert s2r.network.discriminator.spectral_norm and s2r.train.lambda_feat == 10
    assert (s2r.train.lr_g, s2r.train.lr_d, s2r.train.betas_g) == (1e-4, 4e-4, (0.0, 0.999))
    assert s2r.train.ema and s2r.network.generator.norm == "instance"


@pytest.mark.parametrize("data, key, words", [
    ({"train": {"lr_gen": 1e-4}}, "train.lr_gen", "unknown key"),
    ({"network": {"generator": {"arhc": "spade"}}}, "network.generator.arhc", "unknown key"),
    ({"bogus": {}}, "bogus", "unknown key"),
    ({"train": {"batch_size": "four"}}, "train.batch_size", "expected an integer"),
    ({"train": {"batch_size": 2.5}}, "train.batch_size", "expected an integer"),
    ({"train": {"ema": "yes"}}, "train.ema", "true/false"),
    ({"train": {"gan_loss": "wasserstein"}}, "train.gan_loss", "must be one of"),
    ({"train": {"betas_g": [0.0]}}, "train.betas_g", "expected 2 values"),
    ({"train": {"lr_d": -1.0}}, "train.lr_d", "must be > 0"),
    ({"train": {"lambda_vgg": 10.0}}, "train.perceptual_weights_path", "local VGG-19"),
    ({"data": {"crop_size": 100}}, "data.crop_size", "not a multiple of 32"),
    ({"network": {"generator": {"arch": "unet", "unet_levels": 8}}, "data": {"crop_size": 128}}, "data.crop_size", "256"),
    ({"network": {"generator": {"arch": "unet", "use_vae": True}}}, "network.generator.use_vae", "spade"),
    ({"network": {"generator": {"norm": "batch"}}, "train": {"batch_size": 1}}, "network.generator.norm", "batch"),
    ({"train": {"mode": "cycle"}, "network": {"generator": {"use_vae": True}}}, "network.generator.use_vae", "cycle"),
    ({"train": "fast"}, "train", "expected a mapping"),
])
def test_config_errors_name_the_key(data, key, words):
    with pytest.raises(ConfigError) as exc:
        config_from_dict(data)
    msg = str(exc.value)
    assert msg.startswith(f"{key}:"), msg
    assert words in msg


def test_yaml_numbers_and_overrides(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("train:\n  lr_g: 1e-4\n  grad_clip_norm: null\n")
    cfg = load_config(p, ["train.batch_size=8", "data.url=synthetic://16"])
    assert cfg.train.lr_g == 1e-4 and cfg.train.batch_size == 8 and cfg.data.url == "synthetic://16"
    with pytest.raises(ConfigError, match="c.yaml: train.batch_size"):
        load_config(p, ["train.batch_size=0"])


def test_unknown_preset_lists_known():
    with pytest.raises(ConfigError, match="known presets"):
        load_config("nope")
    assert {p.stem for p in PRESET_DIR.glob("*.yaml")} >= {"thesis", "s2r", "tiny"}


def test_resolved_dict_has_every_field():
    d = config_to_dict(load_config("tiny"))
    assert set(d) == {"network", "train", "data", "eval"}
    assert "ema_beta" in d["train"] and d["network"]["conditioning"]["depth_encoding"] == "log"
    assert d["eval"]["crops_per_panorama"] >= 1 and d["eval"]["at_end"] is True


def test_cli_dry_run_and_config_errors(tmp_path, capsys):
    from s2r_train.cli import main

    assert main(["train", "--config", "s2r", "--dataset", "synthetic://8", "--run-dir", str(tmp_path / "r"),
                 "--set", "train.batch_size=8", "--dry-run"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["train"]["batch_size"] == 8 and printed["data"]["url"] == "synthetic://8"
    assert config_from_dict(printed) == load_config("s2r", ["train.batch_size=8", "data.url=synthetic://8"])
    assert not (tmp_path / "r").exists()  # a dry run writes nothing
    assert main(["train", "--config", "s2r", "--run-dir", str(tmp_path / "r"), "--set", "train.lr_gen=1"]) == 2
    assert "train.lr_gen: unknown key" in capsys.readouterr().err
