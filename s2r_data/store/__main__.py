"""``python -m s2r_data.store verify URL`` (exit 1 on problems) | ``info URL`` | ``compact URL``
(exit 2 with a message when the store cannot be read)."""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter

from . import compact, open_dataset, verify


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m s2r_data.store", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    v = sub.add_parser("verify", help="check every sample; non-zero exit on problems")
    v.add_argument("url")
    v.add_argument("--no-pyramid", action="store_true", help="skip comparing pyramid levels with level 0")
    v.add_argument("--no-progress", action="store_true")
    v.add_argument("--workers", type=int, default=1, help="check samples in this many processes")
    i = sub.add_parser("info", help="print attributes and index summary as JSON")
    i.add_argument("url")
    c = sub.add_parser("compact", help="merge index fragments into index.parquet")
    c.add_argument("url")
    args = ap.parse_args(argv)
    if args.cmd == "verify":
        rep = verify(args.url, check_pyramid=not args.no_pyramid, progress=not args.no_progress, workers=args.workers)
        print(rep.summary())
        return 0 if rep.ok else 1
    try:
        if args.cmd == "compact":
            text = f"{compact(args.url)} rows in index.parquet"
        else:
            text = json.dumps(_info(args.url), indent=2, default=str)
    except Exception as e:  # noqa: BLE001 - the command line's edge: a damaged store is a message, not a traceback
        print(f"python -m s2r_data.store {args.cmd} {args.url}: cannot read the store ({type(e).__name__}: {e}); "
              f"`python -m s2r_data.store verify {args.url}` lists what is damaged", file=sys.stderr)
        return 2
    print(text)
    return 0


def _info(url: str) -> dict:
    ds = open_dataset(url)
    t = ds.index
    attrs = ds.attrs
    info = {
        "url": ds.loc.url,
        "samples": len(ds),
        "city": attrs.get("city"),
        "height": attrs.get("height"),
        "width": attrs.get("width"),
        "pyramid_levels": attrs.get("pyramid_levels"),
        "codec": attrs.get("codec"),
        "dataset_version": attrs.get("dataset_version"),
        "splits": dict(Counter(t.column("split").to_pylist())) if len(ds) else {},
        "sequences": len(set(t.column("sequence_id").to_pylist())) if len(ds) else 0,
        "index_columns": t.schema.names,
    }
    from ..align.index_summary import index_alignment_summary

    alignment = index_alignment_summary(t)
    if alignment is not None:
        info["alignment"] = alignment
    return info


if __name__ == "__main__":
    sys.exit(main())
