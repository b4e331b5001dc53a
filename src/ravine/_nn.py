"""Small helpers over torch modules that the curvature tools, the landscape and the harness share.

- :func:`evaluation_mode`: every submodule in eval mode inside the block, each one's own flag
  restored after it (a frozen batch-norm layer inside a training model stays frozen), instead of
  one ``model.train(was_training)`` that flattens mixed modes;
- :func:`flatten` / :func:`unflatten`: a list of tensors as one flat vector and back, in the order
  given (``torch.nn.utils.parameters_to_vector``'s layout when the list is ``model.parameters()``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
from torch import Tensor, nn

__all__ = ["evaluation_mode", "training_mode", "flatten", "unflatten"]


@contextlib.contextmanager
def _mode(model: nn.Module, training: bool) -> Iterator[nn.Module]:
    flags = [(module, module.training) for module in model.modules()]
    model.train(training)
    try:
        yield model
    finally:
        for module, flag in flags:
            module.training = flag


def evaluation_mode(model: nn.Module) -> contextlib.AbstractContextManager[nn.Module]:
    """Put every submodule of ``model`` in evaluation mode, and restore each one's flag on exit.

    Unlike ``model.train(was_training)``, this restores mixed states exactly (a frozen batch-norm
    layer in eval mode inside a model in train mode stays so).
    """
    return _mode(model, False)


def training_mode(model: nn.Module) -> contextlib.AbstractContextManager[nn.Module]:
    """Put every submodule of ``model`` in training mode, and restore each one's flag on exit."""
    return _mode(model, True)


def flatten(tensors: Sequence[Tensor], *, dtype: torch.dtype | None = None) -> Tensor:
    """The tensors concatenated into one flat vector (optionally cast to ``dtype``)."""
    return torch.cat([t.reshape(-1) if dtype is None else t.reshape(-1).to(dtype) for t in tensors])


def unflatten(vector: Tensor, like: Sequence[Tensor]) -> list[Tensor]:
    """Split a flat vector into views shaped like ``like`` (its length must be their total size)."""
    numels = [t.numel() for t in like]
    if vector.dim() != 1 or vector.numel() != sum(numels):
        raise ValueError(f"vector must be 1-D of length {sum(numels)}, got shape {tuple(vector.shape)}")
    return [c.view(t.shape) for c, t in zip(vector.split(numels), like)]
