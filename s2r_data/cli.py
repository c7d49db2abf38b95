"""``s2r`` — one entry point for the data-side commands (each is also ``python -m <module>``).

    s2r city build --city sample --out DIR      OSM → city model + preview   (s2r_data.osm)
    s2r harvest --city sample --out DIR ...      Mapillary harvest            (s2r_data.mapillary)
    s2r replay --content data/sample/replay      local Mapillary replay server (s2r_data.mapillary.replay)
    s2r sample-content --out DIR                 regenerate the sample city's replay content
    s2r render --city-model P --poses J --out D  panoramas: Blender or --backend raycast (s2r_data.render)
    s2r store verify|info|compact URL            dataset store                (s2r_data.store)
    s2r align --dataset D --out D2 [--city-model P]  score + refine poses of a dataset (s2r_data.align)
"""

from __future__ import annotations

import importlib
import sys
from typing import Sequence

COMMANDS: dict[str, tuple[str, str]] = {
    "city": ("s2r_data.osm.__main__", "build or inspect a city model from OSM"),
    "harvest": ("s2r_data.mapillary.__main__", "harvest a city's Mapillary panoramas"),
    "replay": ("s2r_data.mapillary.replay", "run the local Mapillary replay server"),
    "sample-content": ("s2r_data.mapillary.sample_content", "regenerate the sample city's replay content"),
    "render": ("s2r_data.render.cli", "render sim passes (or stand-in photos) for poses"),
    "store": ("s2r_data.store.__main__", "verify / inspect / compact a dataset store"),
    "align": ("s2r_data.align.__main__", "score and refine the poses of an existing dataset"),
}


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if args else 2
    cmd, rest = args[0], args[1:]
    if cmd not in COMMANDS:
        print(f"s2r: unknown command {cmd!r}; choose one of: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[cmd][0])
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
