"""Shared pieces of the trainer tests: a tiny config and single-threaded torch.

Tests run on 2 shared cores; two OpenMP threads on an oversubscribed machine make tiny
convs ~20x slower, so these tests pin torch to one thread.
"""

from __future__ import annotations

import pytest
import torch

from s2r_train.config import Config, load_config

TINY_TEST_OVERRIDES = [
    "train.batch_size=2",
    "train.val_batches=0",
    "train.num_vis_samples=0",
    "train.epochs=1000",
    "network.generator.spade_hidden=8",
]


def tiny_config(*overrides: str) -> Config:
    return load_config("tiny", TINY_TEST_OVERRIDES + list(overrides))


@pytest.fixture(autouse=True)
def one_thread_deterministic_restored():
    threads = torch.get_num_threads()
    det = torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(det)
    torch.set_flush_denormal(False)
