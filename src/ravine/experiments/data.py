"""Data that ships offline, with fixed and recorded train/test splits.

Every dataset is a deterministic function of its name, its keyword arguments and ``seed``: the same call
gives the same tensors on every machine (nothing is downloaded). ``Dataset.metadata()`` returns a
JSON-serializable description including the split itself (sample indices or split position), which the
training harness writes into each run directory (``metadata.json``).

Names (``load(name, seed=0, **kw)``):

- ``"digits"``: scikit-learn's bundled handwritten digits (1797 images of 8x8 pixels, 10 classes). The
  split is a seeded permutation (``test_fraction=0.2`` by default); features are standardized with the
  *training* set's per-pixel mean and standard deviation (pixels constant on the training set keep
  scale 1), so the test set leaks nothing. ``x``: float ``(N, 64)``; ``y``: class index ``(N,)``.
- ``"chars"``: a character-level corpus, CPython's ``pydoc_data.topics.topics`` (about 465k
  characters of English documentation), the dict's values joined in sorted key order. The vocabulary
  is the sorted set of characters of the whole corpus; the first ``1 - val_fraction`` of the characters
  are the training stream, the rest the test (validation) stream (split by position, not shuffled,
  as in nanoGPT). A sample is a block of ``block_size`` tokens and its targets shifted by one.
- ``"modadd"``: modular addition ``(a + b) mod p`` as token sequences ``[a, "+", b, "="]`` (vocabulary
  ``p + 2``) whose last position must predict ``c``; all ``p * p`` pairs, a seeded ``train_fraction`` of
  them for training (Power et al., 2022, "Grokking").
- ``"parity"``: sparse parity (Barak et al., 2022): ``n_bits`` uniform random bits in ``{-1, +1}``;
  the label is 1 when the product of ``k`` relevant bits (a seeded subset, recorded) is ``-1``.
- ``"copy"``: the copy / recall task of Hochreiter & Schmidhuber (1997) in the form of Arjovsky et al.
  (2016): ``length`` symbols from an alphabet of ``n_symbols``, then ``delay - 1`` blanks, a delimiter,
  and ``length`` blanks; the model must output the symbols in the last ``length`` positions. Longer
  ``delay`` means longer-range dependencies (exploding/vanishing gradients in RNNs).
- ``"teacher"``: a student-teacher classification task whose size is a parameter. Inputs are
  ``x ~ N(0, I)`` in ``in_features`` dimensions; the label is the argmax of a fixed random teacher
  network (``in_features -> hidden`` tanh ``-> n_classes``, no biases, weights drawn from ``seed``, the
  output weights of each class scaled to unit norm so no class wins by its scale), replaced with
  probability ``label_noise`` by a uniformly drawn class. Every part has its own random stream (teacher,
  training inputs, training noise, test inputs, test noise), so the training set of size ``n`` is the
  first ``n`` rows of any larger one and the test set does not depend on ``n_train``. ``input_scale = s``
  (default 1) multiplies input feature ``j`` by ``s ** (j / (in_features - 1))`` after the labels are
  drawn: the same task with badly scaled inputs, whose covariance has condition number ``s^2``. Made for
  measurements along the data size (the ``optimizers`` experiment) and the conditioning (``momentum``):
  10^6 examples take about a second.

Targets and losses: every dataset's model output is a tensor of logits over the last dimension and the
target an integer tensor with the output's shape minus that dimension; positions whose target is
``IGNORE_INDEX`` (-100, torch's default) do not count in the loss or the accuracy. So a single rule,
:func:`cross_entropy`, is the loss of every task.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ravine._validation import Interval, Options, check

from ._checks import FRACTION, NATURAL, integer

IGNORE_INDEX = -100

__all__ = [
    "IGNORE_INDEX",
    "Dataset",
    "ArrayDataset",
    "CharDataset",
    "BatchSampler",
    "load",
    "names",
    "cross_entropy",
    "accuracy_counts",
]


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of ``logits`` (``(..., C)``) against integer ``targets`` (``(...)``).

    ``L = -(1/M) * sum_{i: t_i != -100} log softmax(z_i)[t_i]`` where ``M`` counts the non-ignored
    positions. This is ``torch.nn.functional.cross_entropy(..., ignore_index=-100)`` over the flattened
    positions, and the loss of every dataset in this module.
    """
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=IGNORE_INDEX)


def accuracy_counts(logits: torch.Tensor, targets: torch.Tensor) -> tuple[int, int]:
    """``(correct, counted)``: how many non-ignored positions have ``argmax(logits) == target``."""
    mask = targets != IGNORE_INDEX
    pred = logits.argmax(dim=-1)
    return int(((pred == targets) & mask).sum().item()), int(mask.sum().item())


class BatchSampler:
    """Draws training batches; its whole state is savable (``state_dict`` holds tensors and ints only).

    Finite datasets (:class:`ArrayDataset`) are read in epochs: each epoch is a permutation of the
    training indices drawn from the sampler's own ``torch.Generator``; a batch takes the next
    ``batch_size`` indices, continuing into the next epoch's permutation when one runs out (so every
    batch has exactly ``batch_size`` samples and every sample is seen once per epoch).
    ``batch_size=None`` means full batch: every call returns the whole training set and uses no
    randomness. :class:`CharDataset` draws block start positions uniformly with replacement (nanoGPT).
    """

    def __init__(self, dataset: Dataset, batch_size: int | None, seed: int = 0):
        if batch_size is not None:
            integer("batch_size", batch_size)
        self.dataset = dataset
        self.batch_size = batch_size
        self.generator = torch.Generator().manual_seed(int(seed))
        self.perm = torch.empty(0, dtype=torch.long)
        self.pos = 0
        self.epoch = 0

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The next training batch ``(x, y)`` (CPU tensors)."""
        return self.dataset._sample(self)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        while True:
            yield self.next()

    def _take_indices(self, n_total: int, k: int) -> torch.Tensor:
        out = []
        need = k
        while need > 0:
            if self.pos >= len(self.perm):
                self.perm = torch.randperm(n_total, generator=self.generator)
                self.pos = 0
                self.epoch += 1
            take = self.perm[self.pos : self.pos + need]
            self.pos += len(take)
            need -= len(take)
            out.append(take)
        return torch.cat(out)

    def state_dict(self) -> dict[str, Any]:
        """Generator state, current permutation, position and epoch (``torch.load(weights_only=True)``-safe)."""
        return {
            "generator": self.generator.get_state(),
            "perm": self.perm.clone(),
            "pos": int(self.pos),
            "epoch": int(self.epoch),
            "batch_size": self.batch_size,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a state from :meth:`state_dict` (the batch size must match)."""
        if state.get("batch_size") != self.batch_size:
            raise ValueError(
                f"sampler state has batch_size={state.get('batch_size')!r}, this sampler has {self.batch_size!r}"
            )
        self.generator.set_state(state["generator"])
        self.perm = state["perm"].clone()
        self.pos = int(state["pos"])
        self.epoch = int(state["epoch"])


class Dataset:
    """Base class: a named, seeded dataset with a training sampler and fixed evaluation sets.

    Attributes: ``name``, ``params`` (the keyword arguments that define it, ``seed`` included),
    ``task`` (``"classification"``, ``"sequence"`` or ``"language_model"``), ``dims`` (what a model
    needs: ``in_features``/``n_classes`` for vector data, ``vocab_size``/``block_size`` for tokens).
    """

    name: str
    params: dict[str, Any]
    task: str
    dims: dict[str, int]

    def sampler(self, batch_size: int | None, seed: int = 0) -> BatchSampler:
        """A :class:`BatchSampler` over the training split (``batch_size=None``: full batch)."""
        return BatchSampler(self, batch_size, seed)

    def eval_data(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        """The fixed evaluation tensors ``(x, y)`` of ``split`` (``"train"`` or ``"test"``)."""
        raise NotImplementedError  # pragma: no cover - abstract

    @property
    def n_train(self) -> int:
        """Number of training samples (for ``chars``: training characters)."""
        raise NotImplementedError  # pragma: no cover - abstract

    def metadata(self) -> dict[str, Any]:
        """JSON-serializable description: name, params, task, dims, sizes and the split itself."""
        raise NotImplementedError  # pragma: no cover - abstract

    def _sample(self, sampler: BatchSampler) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError  # pragma: no cover - abstract

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, params={self.params!r})"


def _check_split(split: str) -> str:
    return check("split", split, Options(("train", "test")))


class ArrayDataset(Dataset):
    """A finite dataset held as tensors: ``x_train, y_train, x_test, y_test`` and a recorded ``split``."""

    def __init__(
        self,
        name: str,
        params: dict[str, Any],
        task: str,
        dims: dict[str, int],
        x_train: torch.Tensor,
        y_train: torch.Tensor,
        x_test: torch.Tensor,
        y_test: torch.Tensor,
        split: dict[str, Any],
        extra: dict[str, Any] | None = None,
    ):
        self.name, self.params, self.task, self.dims = name, dict(params), task, dict(dims)
        self.x_train, self.y_train, self.x_test, self.y_test = x_train, y_train, x_test, y_test
        self.split = split
        self.extra = dict(extra or {})

    @property
    def n_train(self) -> int:
        return int(self.x_train.shape[0])

    @property
    def n_test(self) -> int:
        return int(self.x_test.shape[0])

    def eval_data(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        if _check_split(split) == "train":
            return self.x_train, self.y_train
        return self.x_test, self.y_test

    def _sample(self, sampler: BatchSampler) -> tuple[torch.Tensor, torch.Tensor]:
        if sampler.batch_size is None:
            return self.x_train, self.y_train
        idx = sampler._take_indices(self.n_train, sampler.batch_size)
        return self.x_train[idx], self.y_train[idx]

    def metadata(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "params": dict(self.params),
            "task": self.task,
            "dims": dict(self.dims),
            "n_train": self.n_train,
            "n_test": self.n_test,
            "split": self.split,
            **self.extra,
        }


class CharDataset(Dataset):
    """A character-level language-modelling corpus split by position.

    ``tokens`` is the whole corpus as integer ids; ``train_tokens = tokens[:split_at]`` and
    ``test_tokens = tokens[split_at:]``. ``vocab`` is the sorted list of characters (id = position).
    Evaluation uses ``eval_blocks`` blocks per split at evenly spaced, fixed start positions (no
    randomness), so evaluations are comparable across runs and deterministic.
    """

    def __init__(self, text: str, params: dict[str, Any]):
        self.name = "chars"
        self.params = dict(params)
        self.task = "language_model"
        self.vocab = sorted(set(text))
        self.stoi = {c: i for i, c in enumerate(self.vocab)}
        self.tokens = self._encode_all(text)
        self.block_size = int(params["block_size"])
        self.eval_blocks = int(params["eval_blocks"])
        self.split_at = int(round(len(text) * (1.0 - float(params["val_fraction"]))))
        self.train_tokens = self.tokens[: self.split_at]
        self.test_tokens = self.tokens[self.split_at :]
        for nm, stream in (("train", self.train_tokens), ("test", self.test_tokens)):
            if len(stream) <= self.block_size:
                raise ValueError(
                    f"block_size={self.block_size} is too long for the {nm} stream ({len(stream)} characters)"
                )
        self.dims = {"vocab_size": len(self.vocab), "block_size": self.block_size}
        self._eval_cache: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def _encode_all(self, text: str) -> torch.Tensor:
        # Vectorized: code points through a lookup table (same ids as stoi, much faster than a loop).
        codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
        lut = np.full(int(codes.max()) + 1 if len(codes) else 1, -1, dtype=np.int64)
        for c, i in self.stoi.items():
            lut[ord(c)] = i
        return torch.from_numpy(lut[codes].copy())

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    @property
    def n_train(self) -> int:
        return int(len(self.train_tokens))

    def encode(self, s: str) -> torch.Tensor:
        """Token ids of ``s`` (ValueError for characters outside the vocabulary)."""
        bad = sorted({c for c in s if c not in self.stoi})
        if bad:
            raise ValueError(f"characters not in the vocabulary: {bad!r}")
        return self._encode_all(s) if s else torch.zeros(0, dtype=torch.long)

    def decode(self, ids: torch.Tensor | list[int]) -> str:
        """The string of token ids ``ids``."""
        if isinstance(ids, torch.Tensor):
            ids = ids.reshape(-1).tolist()
        return "".join(self.vocab[int(i)] for i in ids)

    def _stream(self, split: str) -> torch.Tensor:
        return self.train_tokens if _check_split(split) == "train" else self.test_tokens

    def _blocks(self, stream: torch.Tensor, starts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        offs = torch.arange(self.block_size)
        x = stream[starts[:, None] + offs]
        y = stream[starts[:, None] + offs + 1]
        return x, y

    def batches(
        self, block_size: int, batch_size: int, generator: torch.Generator, split: str = "train"
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Endless random batches ``(x, y)`` of shape ``(batch_size, block_size)`` from ``split``.

        Start positions are uniform on ``[0, len(stream) - block_size - 1]`` drawn with ``generator``;
        ``y`` is ``x`` shifted by one character (next-character prediction).
        """
        block_size = integer("block_size", block_size)
        batch_size = integer("batch_size", batch_size)
        if not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
        stream = self._stream(split)
        if len(stream) <= block_size:
            raise ValueError(f"block_size={block_size} is too long for the {split} stream ({len(stream)})")
        offs = torch.arange(block_size)
        while True:
            starts = torch.randint(len(stream) - block_size, (batch_size,), generator=generator)
            yield stream[starts[:, None] + offs], stream[starts[:, None] + offs + 1]

    def _sample(self, sampler: BatchSampler) -> tuple[torch.Tensor, torch.Tensor]:
        if sampler.batch_size is None:
            raise ValueError("batch_size=None (full batch) is not available for 'chars'; give an int")
        n = len(self.train_tokens) - self.block_size
        starts = torch.randint(n, (sampler.batch_size,), generator=sampler.generator)
        return self._blocks(self.train_tokens, starts)

    def eval_data(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        if split not in self._eval_cache:
            stream = self._stream(split)
            n = len(stream) - self.block_size
            k = min(self.eval_blocks, n)
            starts = torch.linspace(0, n - 1, k).round().long()
            self._eval_cache[split] = self._blocks(stream, starts)
        return self._eval_cache[split]

    def metadata(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "params": dict(self.params),
            "task": self.task,
            "dims": dict(self.dims),
            "n_characters": int(len(self.tokens)),
            "n_train": self.n_train,
            "n_test": int(len(self.test_tokens)),
            "split": {"kind": "position", "split_at": self.split_at},
            "vocab": "".join(self.vocab),
        }


# --------------------------------------------------------------------------------------------- loaders


def _load_digits(seed: int, test_fraction: float = 0.2) -> ArrayDataset:
    from sklearn.datasets import load_digits

    test_fraction = check("test_fraction", test_fraction, FRACTION)
    bunch = load_digits()
    x = np.asarray(bunch.data, dtype=np.float64)
    y = np.asarray(bunch.target, dtype=np.int64)
    n = len(x)
    perm = np.random.default_rng(seed).permutation(n)
    n_test = int(round(n * test_fraction))
    test_idx, train_idx = np.sort(perm[:n_test]), np.sort(perm[n_test:])
    mean = x[train_idx].mean(axis=0)
    std = x[train_idx].std(axis=0)
    std[std == 0] = 1.0
    xs = (x - mean) / std
    to = torch.tensor
    return ArrayDataset(
        "digits",
        {"seed": seed, "test_fraction": test_fraction},
        "classification",
        {"in_features": 64, "n_classes": 10, "image_size": 8, "in_channels": 1},
        to(xs[train_idx], dtype=torch.float32),
        to(y[train_idx]),
        to(xs[test_idx], dtype=torch.float32),
        to(y[test_idx]),
        {"kind": "indices", "train": train_idx.tolist(), "test": test_idx.tolist()},
    )


@functools.lru_cache(maxsize=1)
def _corpus_text() -> str:
    """CPython's pydoc topics (a dict of strings), joined in sorted key order."""
    from pydoc_data.topics import topics

    return "".join(topics[k] for k in sorted(topics))


def _load_chars(seed: int, block_size: int = 64, val_fraction: float = 0.1, eval_blocks: int = 64) -> CharDataset:
    block_size = integer("block_size", block_size)
    val_fraction = check("val_fraction", val_fraction, FRACTION)
    eval_blocks = integer("eval_blocks", eval_blocks)
    params = {"seed": seed, "block_size": block_size, "val_fraction": val_fraction, "eval_blocks": eval_blocks}
    return CharDataset(_corpus_text(), params)


def _load_modadd(seed: int, p: int = 97, train_fraction: float = 0.5) -> ArrayDataset:
    p = integer("p", p, Interval(int, 2, None, closed="left"))
    train_fraction = check("train_fraction", train_fraction, FRACTION)
    a = torch.arange(p).repeat_interleave(p)
    b = torch.arange(p).repeat(p)
    c = (a + b) % p
    plus, eq = p, p + 1
    x = torch.stack([a, torch.full_like(a, plus), b, torch.full_like(a, eq)], dim=1)
    y = torch.full_like(x, IGNORE_INDEX)
    y[:, -1] = c
    perm = np.random.default_rng(seed).permutation(p * p)
    n_train = int(round(p * p * train_fraction))
    if n_train < 1 or n_train >= p * p:
        raise ValueError(f"train_fraction={train_fraction} leaves an empty split for p={p}")
    train_idx, test_idx = np.sort(perm[:n_train]), np.sort(perm[n_train:])
    tr, te = torch.from_numpy(train_idx), torch.from_numpy(test_idx)
    return ArrayDataset(
        "modadd",
        {"seed": seed, "p": p, "train_fraction": train_fraction},
        "sequence",
        {"vocab_size": p + 2, "block_size": 4, "n_classes": p + 2},
        x[tr],
        y[tr],
        x[te],
        y[te],
        {"kind": "indices", "index": "a * p + b", "train": train_idx.tolist(), "test": test_idx.tolist()},
        {"tokens": {"+": plus, "=": eq}},
    )


def _load_parity(seed: int, n_bits: int = 20, k: int = 3, n_train: int = 2000, n_test: int = 1000) -> ArrayDataset:
    n_bits = integer("n_bits", n_bits)
    k = integer("k", k, Interval(int, 1, n_bits))
    n_train = integer("n_train", n_train)
    n_test = integer("n_test", n_test)
    rng = np.random.default_rng(seed)
    relevant = np.sort(rng.choice(n_bits, size=k, replace=False))
    bits = rng.integers(0, 2, size=(n_train + n_test, n_bits)) * 2 - 1
    labels = (np.prod(bits[:, relevant], axis=1) < 0).astype(np.int64)
    x = torch.tensor(bits, dtype=torch.float32)
    y = torch.tensor(labels)
    return ArrayDataset(
        "parity",
        {"seed": seed, "n_bits": n_bits, "k": k, "n_train": n_train, "n_test": n_test},
        "classification",
        {"in_features": n_bits, "n_classes": 2},
        x[:n_train],
        y[:n_train],
        x[n_train:],
        y[n_train:],
        {"kind": "generated", "train": [0, n_train], "test": [n_train, n_train + n_test]},
        {"relevant_bits": relevant.tolist()},
    )


def _load_copy(
    seed: int, length: int = 10, delay: int = 10, n_symbols: int = 8, n_train: int = 2000, n_test: int = 500
) -> ArrayDataset:
    length = integer("length", length)
    delay = integer("delay", delay)
    n_symbols = integer("n_symbols", n_symbols)
    n_train = integer("n_train", n_train)
    n_test = integer("n_test", n_test)
    g = torch.Generator().manual_seed(seed)
    n = n_train + n_test
    blank, delim = 0, n_symbols + 1
    t_total = delay + 2 * length
    sym = torch.randint(1, n_symbols + 1, (n, length), generator=g)
    x = torch.full((n, t_total), blank, dtype=torch.long)
    x[:, :length] = sym
    x[:, length + delay - 1] = delim
    y = torch.full((n, t_total), IGNORE_INDEX, dtype=torch.long)
    y[:, -length:] = sym
    return ArrayDataset(
        "copy",
        {"seed": seed, "length": length, "delay": delay, "n_symbols": n_symbols, "n_train": n_train, "n_test": n_test},
        "sequence",
        {"vocab_size": n_symbols + 2, "block_size": t_total, "n_classes": n_symbols + 2},
        x[:n_train],
        y[:n_train],
        x[n_train:],
        y[n_train:],
        {"kind": "generated", "train": [0, n_train], "test": [n_train, n]},
        {"tokens": {"blank": blank, "delimiter": delim}, "chance_loss": math.log(n_symbols)},
    )


def _load_teacher(
    seed: int,
    n_train: int = 10_000,
    n_test: int = 10_000,
    in_features: int = 16,
    n_classes: int = 4,
    hidden: int = 8,
    label_noise: float = 0.1,
    input_scale: float = 1.0,
) -> ArrayDataset:
    n_train = integer("n_train", n_train)
    n_test = integer("n_test", n_test)
    in_features = integer("in_features", in_features)
    n_classes = integer("n_classes", n_classes, Interval(int, 2, None, closed="left"))
    hidden = integer("hidden", hidden)
    label_noise = check("label_noise", label_noise, Interval(float, 0, 1, closed="left"))
    input_scale = check("input_scale", input_scale, Interval(float, 1, 1e6))
    params = {
        "seed": seed,
        "n_train": n_train,
        "n_test": n_test,
        "in_features": in_features,
        "n_classes": n_classes,
        "hidden": hidden,
        "label_noise": label_noise,
        "input_scale": input_scale,
    }
    # feature j is multiplied by input_scale ** (j / (d - 1)) after labelling: the same task, with inputs
    # whose covariance diag(scales^2) has condition number input_scale^2
    scales = input_scale ** (np.arange(in_features) / max(in_features - 1, 1))

    def stream(tag: int) -> np.random.Generator:
        return np.random.default_rng([seed, tag])

    teacher = stream(0)
    w1 = teacher.standard_normal((in_features, hidden)) / math.sqrt(in_features)
    w2 = teacher.standard_normal((hidden, n_classes))
    w2 /= np.linalg.norm(w2, axis=0, keepdims=True)  # unit columns: no class favoured by its scale

    def draw(n: int, x_tag: int, noise_tag: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = stream(x_tag).standard_normal((n, in_features))
        y = np.argmax(np.tanh(x @ w1) @ w2, axis=1)
        u = stream(noise_tag).random((n, 2))  # one row per example: the prefix of a larger draw
        flip = u[:, 0] < label_noise
        y = np.where(flip, np.minimum((u[:, 1] * n_classes).astype(np.int64), n_classes - 1), y)
        return torch.tensor(x * scales, dtype=torch.float32), torch.tensor(y, dtype=torch.int64)

    x_train, y_train = draw(n_train, 1, 2)
    x_test, y_test = draw(n_test, 3, 4)
    return ArrayDataset(
        "teacher",
        params,
        "classification",
        {"in_features": in_features, "n_classes": n_classes},
        x_train,
        y_train,
        x_test,
        y_test,
        {"kind": "generated", "train": [0, n_train], "test": "separate stream", "nested": True},
        {"class_counts_train": torch.bincount(y_train, minlength=n_classes).tolist()},
    )


_LOADERS = {
    "digits": _load_digits,
    "chars": _load_chars,
    "modadd": _load_modadd,
    "parity": _load_parity,
    "copy": _load_copy,
    "teacher": _load_teacher,
}


def names() -> list[str]:
    """The dataset names :func:`load` accepts."""
    return sorted(_LOADERS)


def load(name: str, seed: int = 0, **kw: Any) -> Dataset:
    """Load dataset ``name`` deterministically for ``seed`` (see the module docstring for each).

    Keyword arguments and their defaults:

    - ``digits``: ``test_fraction=0.2``.
    - ``chars``: ``block_size=64, val_fraction=0.1, eval_blocks=64``.
    - ``modadd``: ``p=97, train_fraction=0.5``.
    - ``parity``: ``n_bits=20, k=3, n_train=2000, n_test=1000``.
    - ``copy``: ``length=10, delay=10, n_symbols=8, n_train=2000, n_test=500``.
    - ``teacher``: ``n_train=10000, n_test=10000, in_features=16, n_classes=4, hidden=8, label_noise=0.1,
      input_scale=1.0``.

    Raises ValueError for an unknown name (listing the valid ones) or an out-of-range argument, and
    TypeError for an argument the dataset does not take.
    """
    if name not in _LOADERS:
        raise ValueError(f"unknown dataset name {name!r}; valid names: {', '.join(names())}")
    seed = integer("seed", seed, NATURAL)
    fn = _LOADERS[name]
    import inspect

    accepted = [p for p in inspect.signature(fn).parameters if p != "seed"]
    unknown = sorted(set(kw) - set(accepted))
    if unknown:
        raise TypeError(f"dataset {name!r} got unexpected argument(s) {unknown}; accepted: {accepted}")
    return fn(seed, **kw)
