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


@pytest.fixture(scope="session")
def digits():
    """256 of scikit-learn's digits as float64 inputs in [0, 1] and their labels: the optimizer
    parity tests' data."""
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    return torch.tensor(X[:256] / 16.0, dtype=torch.float64), torch.tensor(y[:256])
