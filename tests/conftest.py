"""Shared test fixtures."""

import pytest
import torch

# One intra-op thread: the tests use small tensors, where a second thread costs more in
# synchronisation than it gains, and under load (CI next to other work) it costs 10-20x.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield
