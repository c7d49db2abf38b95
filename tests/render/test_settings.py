import pytest

from s2r_data.render import RenderSettings


def test_defaults_and_derived_values():
    s = RenderSettings()
    assert (s.width, s.height, s.mode, s.device, s.resolved_samples) == (1024, 512, "labels", "auto", 1)
    assert RenderSettings(mode="photo").resolved_samples == 4
    assert RenderSettings(threads=3).resolved_threads == 3
    assert RenderSettings(threads=0).resolved_threads >= 1
    assert RenderSettings.from_dict(RenderSettings(width=256, mode="photo", samples=8).to_dict()) == RenderSettings(width=256, mode="photo", samples=8)


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"width": 1023}, "width"),
        ({"width": 0}, "width"),
        ({"clip_end_m": 0.5}, "clip_end_m"),
        ({"threads": -1}, "threads"),
        ({"samples": 4}, "samples"),  # labels mode is 1 spp only
        ({"samples": 0, "mode": "photo"}, "samples"),
        ({"mode": "depth"}, "mode"),
        ({"device": "tpu"}, "device"),
        ({"restart_every": 0}, "restart_every"),
        ({"timeout_s": 0}, "timeout_s"),
        ({"on_bad_pose": "ignore"}, "on_bad_pose"),
        ({"denoise": True}, "denoise"),  # labels never denoise
        ({"jpeg_quality": 101}, "jpeg_quality"),
    ],
)
def test_invalid_settings_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=rf"RenderSettings\.{field}="):
        RenderSettings(**kwargs)


def test_unknown_fields_are_rejected():
    with pytest.raises(ValueError, match="unknown RenderSettings fields"):
        RenderSettings.from_dict({"width": 64, "colour": "red"})
