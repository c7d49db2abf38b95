import numpy as np

from s2r_data.poses import Pose, level_rotation_from_heading
from s2r_data.render import protocol
from s2r_data.render.pose_checks import invalid_pose_reason, pose_flags

from .scene_kit import Box, box_city


def test_protocol_round_trip_ignores_chatter():
    msg = {"event": "rendered", "seq": 3, "image_id": "a", "render_s": 0.25}
    line = protocol.encode(msg)
    assert line.endswith("\n") and "\n" not in line[:-1]
    assert protocol.decode(line) == msg
    assert protocol.decode("Fra:1 Mem:12M | Rendering 1 / 1 samples") is None
    assert protocol.decode(protocol.PREFIX + "{broken") is None
    assert protocol.decode("") is None


def test_pose_flags():
    b = Box("wall", (5.0, -5.0, 0.0), (9.0, 5.0, 10.0))
    model = box_city([b], ground_half_m=50.0, footprint_boxes=[b])
    R = level_rotation_from_heading(0)
    poses = [Pose("ok", [0, 0, 2.5], R), Pose("in", [6, 1, 2.5], R), Pose("out", [0, 60, 2.5], R), Pose("under", [0, 0, -1], R)]
    flags = pose_flags(model, poses)
    assert [f["inside_building"] for f in flags] == [False, True, False, False]
    assert [f["outside_bounds"] for f in flags] == [False, False, True, False]
    assert [f["below_ground"] for f in flags] == [False, False, False, True]
    assert pose_flags(model, []) == []


def test_invalid_pose_reasons():
    R = level_rotation_from_heading(10)
    assert invalid_pose_reason(Pose("123_a-b.c", [0, 0, 1], R)) is None
    assert "image_id" in invalid_pose_reason(Pose("../x", [0, 0, 1], R))
    assert "image_id" in invalid_pose_reason(Pose(".hidden", [0, 0, 1], R))
    assert "finite" in invalid_pose_reason(Pose("a", [np.inf, 0, 1], R))
    assert "rotation" in invalid_pose_reason(Pose("a", [0, 0, 1], 2 * R))
    assert "rotation" in invalid_pose_reason(Pose("a", [0, 0, 1], np.diag([1.0, 1.0, -1.0]) @ R))
