"""EXR channel dict → dataset arrays (pure numpy, no Blender)."""

import numpy as np
import pytest

from s2r_data.render.passes import PassNotFoundError, group_channels_by_pass, sim_arrays_from_channels

H, W = 4, 6


def _channels(names: dict[str, str], rng) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    depth = rng.uniform(1, 100, (H, W)).astype(np.float32)
    depth[0, :] = 1e10  # sky row
    depth[1, 0] = np.inf
    n = rng.normal(size=(3, H, W)).astype(np.float32)
    n /= np.linalg.norm(n, axis=0)
    col = rng.uniform(0, 1, (3, H, W)).astype(np.float32)
    idx = rng.integers(1, 7, (H, W)).astype(np.float32)
    ch = {}
    for comp, plane in zip("RGB", col):
        ch[f"{names['diffcol']}.{comp}"] = plane
    for comp, plane in zip("XYZ", n):
        ch[f"{names['normal']}.{comp}"] = plane
    ch[names["depth"]] = depth
    ch[names["index"]] = idx
    ch["ViewLayer.Combined.R"] = np.zeros((H, W), np.float32)
    return ch, {"depth": depth, "normal": n, "col": col, "idx": idx}


@pytest.mark.parametrize(
    "names",
    [
        {"diffcol": "ViewLayer.Diffuse Color", "normal": "ViewLayer.Normal", "depth": "ViewLayer.Depth.Z", "index": "ViewLayer.Material Index.X"},
        {"diffcol": "RenderLayer.DiffCol", "normal": "RenderLayer.Normal", "depth": "RenderLayer.Depth.V", "index": "RenderLayer.IndexMA.X"},
        {"diffcol": "diffuse_color", "normal": "normal", "depth": "Z", "index": "material_index"},
    ],
)
def test_passes_matched_loosely_and_sky_zeroed(names):
    ch, truth = _channels(names, np.random.default_rng(1))
    out = sim_arrays_from_channels(ch)
    sky = np.zeros((H, W), bool)
    sky[0, :] = True
    sky[1, 0] = True
    assert out["sky_mask"].shape == (1, H, W) and out["sky_mask"].dtype == bool
    np.testing.assert_array_equal(out["sky_mask"][0], sky)
    assert out["depth_m"].dtype == np.float32 and (out["depth_m"][0][sky] == 0).all()
    np.testing.assert_array_equal(out["depth_m"][0][~sky], truth["depth"][~sky])
    assert out["diffcol"].dtype == np.float16 and out["normal"].dtype == np.float16
    np.testing.assert_allclose(out["normal"][:, ~sky], truth["normal"][:, ~sky], atol=1e-3)
    np.testing.assert_allclose(out["diffcol"][:, ~sky], truth["col"][:, ~sky], atol=1e-3)
    assert (out["normal"][:, sky] == 0).all() and (out["diffcol"][:, sky] == 0).all()
    assert out["label"].dtype == np.uint8 and (out["label"][0][sky] == 0).all()
    np.testing.assert_array_equal(out["label"][0][~sky], truth["idx"][~sky].astype(np.uint8))


def test_missing_pass_is_named():
    ch, _ = _channels({"diffcol": "VL.Diffuse Color", "normal": "VL.Normal", "depth": "VL.Depth.Z", "index": "VL.Material Index.X"}, np.random.default_rng(2))
    del ch["VL.Material Index.X"]
    with pytest.raises(PassNotFoundError, match="label pass"):
        sim_arrays_from_channels(ch)


def test_grouping_keeps_components():
    g = group_channels_by_pass({"ViewLayer.Diffuse Color.R": np.zeros(1), "ViewLayer.Diffuse Color.G": np.ones(1)})
    assert set(g) == {"diffusecolor"} and set(g["diffusecolor"]) == {"r", "g"}
