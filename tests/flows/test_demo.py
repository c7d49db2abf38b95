"""flows.demo helpers (the demo itself runs with `make demo`)."""

import numpy as np
import pytest
from PIL import Image

from flows import demo


def test_parse_args_defaults_and_errors():
    a = demo.parse_args([])
    assert a.width is None and a.train_steps == demo.DEMO_TRAIN_STEPS and not a.no_train
    assert a.out == demo.REPO / "outputs" / "demo"
    with pytest.raises(SystemExit):
        demo.parse_args(["--width", "30"])
    with pytest.raises(SystemExit):
        demo.parse_args(["--train-steps", "0"])


def test_comparison_png_stacks_render_translation_photo(tmp_path):
    from s2r_data.store.synthetic import synthetic_panorama
    from s2r_data.store.writer import DatasetWriter

    url = str(tmp_path / "ds.zarr")
    s = synthetic_panorama(32, 64, seed=3)
    with DatasetWriter(url, height=32, width=64, city="sample") as w:
        w.write_sample("abc", s.sim, s.label, s.real, s.sky_mask, s.valid_mask,
                       {"R_world_to_cam_opensfm": np.eye(3).ravel().tolist()})
    fake = tmp_path / "abc.png"
    Image.fromarray(np.full((64, 128, 3), 77, np.uint8)).save(fake)  # any size: resized to the panorama
    out = demo.comparison_png(url, "abc", fake, tmp_path / "cmp.png")
    a = np.asarray(Image.open(out))
    assert a.shape == (96, 64, 3)
    assert (a[32:64] == 77).all()
    np.testing.assert_array_equal(a[64:], s.real.transpose(1, 2, 0))
