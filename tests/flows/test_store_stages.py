"""flows.stages.finalize_store (the index-and-verify task): a rerun reads no old sample; the full
check is a parameter away."""

from __future__ import annotations

import pytest

from flows import stages
from s2r_data.store.synthetic import write_synthetic_dataset


@pytest.fixture()
def count_sample_checks(monkeypatch):
    """Counts the per-sample content checks of s2r_data.store.verify (the reads of old samples)."""
    import importlib

    verify_mod = importlib.import_module("s2r_data.store.verify")  # the package's `verify` is the function
    calls: list[str] = []
    real = verify_mod._check_sample

    def counting(url, image_id, *a, **kw):
        calls.append(image_id)
        return real(url, image_id, *a, **kw)

    monkeypatch.setattr(verify_mod, "_check_sample", counting)
    return calls


def test_finalize_reads_no_sample_unless_full_verify(tmp_path, count_sample_checks):
    url = str(tmp_path / "ds.zarr")
    ids = write_synthetic_dataset(url, 6, height=32, n_sequences=3)
    first = stages.finalize_store(url, splits=[0.5, 0.5, 1], seed=0)
    assert first["verified"] and first["samples"] == 6 and first["samples_content_checked"] == 0
    assert count_sample_checks == []  # the writer verified every sample when it wrote it
    again = stages.finalize_store(url, splits=[0.5, 0.5, 1], seed=0)  # a no-op rerun
    assert count_sample_checks == [] and again["fingerprint"] == first["fingerprint"]
    full = stages.finalize_store(url, splits=[0.5, 0.5, 1], seed=0, full_verify=True)
    assert sorted(count_sample_checks) == sorted(ids) and full["verified"] and full["verify"] == "full"


def test_full_verify_finds_what_the_store_level_check_cannot(tmp_path):
    url = tmp_path / "ds.zarr"
    write_synthetic_dataset(url, 3, height=32)
    (url / "data.zarr" / "sim" / "c" / "1" / "0" / "0" / "0").write_bytes(b"bit rot")
    assert stages.finalize_store(str(url), splits=[0.5, 0.5, 0], seed=0)["verified"]
    full = stages.finalize_store(str(url), splits=[0.5, 0.5, 0], seed=0, full_verify=True)
    assert not full["verified"] and any("s0_0001" in p and "cannot read" in p for p in full["problems"])


def test_finalize_reports_a_damaged_store(tmp_path):
    import shutil

    url = tmp_path / "ds.zarr"
    write_synthetic_dataset(url, 3, height=32)
    shutil.rmtree(url / "data.zarr" / "mask_l1")
    final = stages.finalize_store(str(url), splits=[0.5, 0.5, 0], seed=0)
    assert not final["verified"] and any("arrays missing: mask_l1" in p for p in final["problems"])
