"""The local S3 stand-in (moto on 127.0.0.1) leaves nothing open behind it: stores written from
several threads (fsspec keeps an instance per thread; zarr's are asynchronous) are closed when the
server goes, so no "Unclosed client session" error is logged when they are collected."""

from __future__ import annotations

import gc
import logging
import threading


def test_leaving_the_server_closes_every_thread_s_s3_connections(caplog):
    from s2r_data.store import open_dataset
    from s2r_data.store.local_s3 import local_s3_server
    from s2r_data.store.synthetic import write_synthetic_dataset

    errors: list[BaseException] = []

    def write(url: str) -> None:
        try:
            write_synthetic_dataset(url, 2, height=16, n_sequences=1)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    with caplog.at_level(logging.ERROR, logger="asyncio"):
        with local_s3_server() as s3:
            urls = [s3.url(f"thread-{k}/dataset.zarr") for k in range(2)]
            threads = [threading.Thread(target=write, args=(u,)) for u in urls]
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=120)
            assert not errors, errors
            assert [len(open_dataset(u).image_ids) for u in urls] == [2, 2]
        gc.collect()
    unclosed = [r.getMessage() for r in caplog.records if "Unclosed" in r.getMessage()]
    assert not unclosed, unclosed
