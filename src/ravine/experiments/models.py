"""Small real models, built by name and rebuildable from their recorded constructor arguments.

``build(name, **kw)`` returns an ``nn.Module`` whose attribute ``ravine_spec`` is
``{"name": name, "kwargs": {...}}`` with every constructor argument (defaults filled in, JSON types:
tuples become lists). ``from_spec(spec)`` rebuilds the same architecture; the training harness writes
the spec into each run's ``metadata.json`` so ``load_model(run_dir)`` needs nothing else.

Models and their input/output conventions (matching :mod:`ravine.experiments.data`):

- ``"mlp"``: ``x (N, in_features)`` float -> logits ``(N, n_classes)``. Layers ``sizes = [in, h1, ...,
  out]`` (or ``in_features``, ``hidden``, ``n_classes``), ``activation`` between linear layers.
- ``"cnn"``: ``x (N, in_channels * image_size**2)`` or ``(N, C, H, W)`` -> logits ``(N, n_classes)``.
  Two 3x3 convolutions (padding 1) with ReLU, each followed by 2x2 max pooling, then a hidden linear
  layer: for 8x8 digits 8x8 -> 4x4 -> 2x2.
- ``"transformer"``: a tiny decoder-only transformer (GPT-2 style blocks: causal multi-head
  self-attention via ``torch.nn.functional.scaled_dot_product_attention(is_causal=True)``, a GELU MLP
  of width ``mlp_ratio * d_model``, learned position embeddings). ``norm="pre"``: ``x + f(LN(x))`` with a
  final LayerNorm before the head (GPT-2, Xiong et al. 2020); ``norm="post"``: ``LN(x + f(x))`` as in
  the original Transformer (Vaswani et al. 2017), no final LayerNorm. Tokens ``(B, T)`` -> ``(B, T, V)``.
- ``"deep_linear"``: an ``"mlp"`` with no activation and no biases, ``x -> W_L ... W_1 x`` (Saxe et al.
  2014), each weight torch's default initialization times ``init_scale``: a small ``init_scale`` starts
  it next to the saddle point at the origin (every gradient vanishes there).
- ``"lstm"`` / ``"rnn"``: embedding -> ``torch.nn.LSTM`` / ``torch.nn.RNN`` (``nonlinearity`` tanh or
  relu) -> linear head at every position. Tokens ``(B, T)`` -> ``(B, T, V_out)``.

Initialization is torch's default for each layer, except the transformer (normal(0, 0.02) for linear
and embedding weights, zero biases, as in GPT-2/nanoGPT). Seed torch before ``build`` for
reproducible weights (the harness does).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ravine._validation import Interval, Options, check

from ._checks import integer

__all__ = ["build", "names", "from_spec", "spec", "layer_groups", "MLP", "CNN", "Transformer", "Recurrent"]

_ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "gelu": nn.GELU,
    "sigmoid": nn.Sigmoid,
    "silu": nn.SiLU,
    "identity": nn.Identity,
}


def _activation(name: str) -> nn.Module:
    return _ACTIVATIONS[check("activation", name, Options(sorted(_ACTIVATIONS)))]()


class MLP(nn.Module):
    """A fully connected network ``Linear -> act -> ... -> Linear`` through ``sizes``."""

    def __init__(self, sizes: list[int], activation: str = "relu", bias: bool = True):
        super().__init__()
        if len(sizes) < 2:
            raise ValueError(f"sizes must list at least an input and an output size, got {sizes!r}")
        for i, s in enumerate(sizes):
            integer(f"sizes[{i}]", s)
        layers: list[nn.Module] = []
        for i in range(len(sizes) - 1):
            layers.append(nn.Linear(sizes[i], sizes[i + 1], bias=bias))
            if i < len(sizes) - 2:
                layers.append(_activation(activation))
        _activation(activation)  # validate even for a single layer
        self.net = nn.Sequential(*layers)
        self.in_features = sizes[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.reshape(x.shape[0], -1))


class CNN(nn.Module):
    """``conv3x3 -> ReLU -> maxpool2 -> conv3x3 -> ReLU -> maxpool2 -> Linear -> ReLU -> Linear``."""

    def __init__(
        self,
        in_channels: int = 1,
        image_size: int = 8,
        channels: list[int] | tuple[int, int] = (16, 32),
        hidden: int = 64,
        n_classes: int = 10,
    ):
        super().__init__()
        integer("in_channels", in_channels)
        integer("image_size", image_size, Interval(int, 4, None, closed="left"))
        if len(channels) != 2:
            raise ValueError(f"channels must have two entries (two conv layers), got {channels!r}")
        c1, c2 = (integer(f"channels[{i}]", c) for i, c in enumerate(channels))
        integer("hidden", hidden)
        integer("n_classes", n_classes)
        self.in_channels, self.image_size = in_channels, image_size
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, c1, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        side = image_size // 4
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(c2 * side * side, hidden), nn.ReLU(), nn.Linear(hidden, n_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:
            x = x.reshape(x.shape[0], self.in_channels, self.image_size, self.image_size)
        return self.head(self.features(x))


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention with one fused QKV projection."""

    def __init__(self, d_model: int, n_head: int, dropout: float, bias: bool):
        super().__init__()
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=bias)
        self.proj = nn.Linear(d_model, d_model, bias=bias)
        self.n_head = n_head
        self.dropout = dropout
        self.resid_drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = self.qkv(x).split(c, dim=2)
        q, k, v = (z.view(b, t, self.n_head, c // self.n_head).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0, is_causal=True)
        return self.resid_drop(self.proj(y.transpose(1, 2).contiguous().view(b, t, c)))


class Block(nn.Module):
    """A transformer block; ``norm`` selects Pre-LN (``x + f(LN x)``) or Post-LN (``LN(x + f(x))``)."""

    def __init__(self, d_model: int, n_head: int, mlp_ratio: int, dropout: float, bias: bool, norm: str):
        super().__init__()
        self.norm = norm
        self.ln1 = nn.LayerNorm(d_model, bias=bias)
        self.attn = CausalSelfAttention(d_model, n_head, dropout, bias)
        self.ln2 = nn.LayerNorm(d_model, bias=bias)
        self.mlp = nn.Sequential(
            nn.Linear(d_model, mlp_ratio * d_model, bias=bias),
            nn.GELU(),
            nn.Linear(mlp_ratio * d_model, d_model, bias=bias),
            nn.Dropout(dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.norm == "pre":
            x = x + self.attn(self.ln1(x))
            return x + self.mlp(self.ln2(x))
        x = self.ln1(x + self.attn(x))
        return self.ln2(x + self.mlp(x))


class Transformer(nn.Module):
    """Tiny decoder-only transformer (see the module docstring for the two normalization placements)."""

    def __init__(
        self,
        vocab_size: int,
        block_size: int,
        n_layer: int = 2,
        n_head: int = 4,
        d_model: int = 64,
        norm: str = "pre",
        mlp_ratio: int = 4,
        dropout: float = 0.0,
        bias: bool = True,
    ):
        super().__init__()
        integer("vocab_size", vocab_size)
        integer("block_size", block_size)
        integer("n_layer", n_layer)
        integer("n_head", n_head)
        integer("d_model", d_model)
        integer("mlp_ratio", mlp_ratio)
        if d_model % n_head:
            raise ValueError(f"d_model={d_model} must be divisible by n_head={n_head}")
        check("norm", norm, Options(("pre", "post")))
        check("dropout", dropout, Interval(float, 0, 1, closed="left"))
        self.block_size, self.norm = block_size, norm
        self.tok_emb = nn.Embedding(vocab_size, d_model)
        self.pos_emb = nn.Embedding(block_size, d_model)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(d_model, n_head, mlp_ratio, dropout, bias, norm) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(d_model, bias=bias) if norm == "pre" else nn.Identity()
        self.head = nn.Linear(d_model, vocab_size, bias=False)
        self.apply(self._init)
        # GPT-2: residual projections scaled by 1/sqrt(2 * n_layer).
        for name, p in self.named_parameters():
            if name.endswith("attn.proj.weight") or name.endswith("mlp.2.weight"):
                nn.init.normal_(p, 0.0, 0.02 / math.sqrt(2 * n_layer))

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, 0.0, 0.02)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        t = idx.shape[1]
        if t > self.block_size:
            raise ValueError(f"sequence length {t} exceeds block_size={self.block_size}")
        pos = torch.arange(t, device=idx.device)
        x = self.drop(self.tok_emb(idx) + self.pos_emb(pos))
        for blk in self.blocks:
            x = blk(x)
        return self.head(self.ln_f(x))


class Recurrent(nn.Module):
    """Embedding -> LSTM or Elman RNN -> linear head at every time step."""

    def __init__(
        self,
        vocab_size: int,
        cell: str = "lstm",
        d_embed: int = 32,
        hidden: int = 64,
        n_layers: int = 1,
        n_out: int | None = None,
        nonlinearity: str = "tanh",
    ):
        super().__init__()
        integer("vocab_size", vocab_size)
        integer("d_embed", d_embed)
        integer("hidden", hidden)
        integer("n_layers", n_layers)
        check("cell", cell, Options(("lstm", "rnn")))
        check("nonlinearity", nonlinearity, Options(("tanh", "relu")))
        n_out = vocab_size if n_out is None else integer("n_out", n_out)
        self.embed = nn.Embedding(vocab_size, d_embed)
        if cell == "lstm":
            self.rnn: nn.Module = nn.LSTM(d_embed, hidden, n_layers, batch_first=True)
        else:
            self.rnn = nn.RNN(d_embed, hidden, n_layers, nonlinearity=nonlinearity, batch_first=True)
        self.head = nn.Linear(hidden, n_out)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(self.embed(idx))
        return self.head(out)


def _mlp(
    sizes: list[int] | None = None,
    activation: str = "relu",
    in_features: int | None = None,
    hidden: list[int] | tuple[int, ...] = (64,),
    n_classes: int | None = None,
    bias: bool = True,
) -> MLP:
    if sizes is None:
        if in_features is None or n_classes is None:
            raise ValueError("mlp needs sizes=[in, ..., out] or in_features and n_classes (with hidden)")
        sizes = [in_features, *hidden, n_classes]
    return MLP(list(sizes), activation=activation, bias=bias)


def _deep_linear(
    in_features: int,
    n_classes: int,
    hidden: list[int] | tuple[int, ...] = (16, 16),
    init_scale: float = 1.0,
) -> MLP:
    check("init_scale", init_scale, Interval.finite(float, 0, low_open=True))
    model = MLP([in_features, *hidden, n_classes], activation="identity", bias=False)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(init_scale)
    return model


def _rnn(vocab_size: int, **kw: Any) -> Recurrent:
    return Recurrent(vocab_size, cell="rnn", **kw)


def _lstm(vocab_size: int, **kw: Any) -> Recurrent:
    return Recurrent(vocab_size, cell="lstm", **kw)


_lstm.__signature__ = inspect.signature(Recurrent).replace(  # type: ignore[attr-defined]
    parameters=[p for p in inspect.signature(Recurrent).parameters.values() if p.name != "cell"]
)
_rnn.__signature__ = _lstm.__signature__  # type: ignore[attr-defined]

_BUILDERS: dict[str, Callable[..., nn.Module]] = {
    "mlp": _mlp,
    "deep_linear": _deep_linear,
    "cnn": CNN,
    "transformer": Transformer,
    "lstm": _lstm,
    "rnn": _rnn,
}


def names() -> list[str]:
    """The model names :func:`build` accepts."""
    return sorted(_BUILDERS)


def accepted_kwargs(name: str) -> list[str]:
    """Constructor argument names of model ``name`` (used to fill them from a dataset's ``dims``)."""
    if name not in _BUILDERS:
        raise ValueError(f"unknown model name {name!r}; valid names: {', '.join(names())}")
    return list(inspect.signature(_BUILDERS[name]).parameters)


def _jsonable(v: Any) -> Any:
    if isinstance(v, tuple | list):
        return [_jsonable(x) for x in v]
    return v


def build(name: str, **kw: Any) -> nn.Module:
    """Build model ``name`` (``"mlp"``, ``"deep_linear"``, ``"cnn"``, ``"transformer"``, ``"lstm"``, ``"rnn"``)
    with ``kw``.

    Defaults: ``mlp(sizes=None, activation="relu", in_features=None, hidden=(64,), n_classes=None,
    bias=True)``; ``deep_linear(in_features, n_classes, hidden=(16, 16), init_scale=1.0)``;
    ``cnn(in_channels=1, image_size=8, channels=(16, 32), hidden=64, n_classes=10)``;
    ``transformer(vocab_size, block_size, n_layer=2, n_head=4, d_model=64, norm="pre", mlp_ratio=4,
    dropout=0.0, bias=True)``; ``lstm``/``rnn(vocab_size, d_embed=32, hidden=64, n_layers=1, n_out=None,
    nonlinearity="tanh")``. The result carries ``ravine_spec`` (name and all arguments, defaults filled).
    """
    if name not in _BUILDERS:
        raise ValueError(f"unknown model name {name!r}; valid names: {', '.join(names())}")
    fn = _BUILDERS[name]
    sig = inspect.signature(fn)
    unknown = sorted(set(kw) - set(sig.parameters))
    if unknown:
        raise TypeError(f"model {name!r} got unexpected argument(s) {unknown}; accepted: {list(sig.parameters)}")
    try:
        bound = sig.bind(**kw)
    except TypeError as e:
        raise TypeError(f"model {name!r}: {e}") from None
    bound.apply_defaults()
    model = fn(**kw)
    model.ravine_spec = {"name": name, "kwargs": {k: _jsonable(v) for k, v in bound.arguments.items()}}
    return model


def spec(model: nn.Module) -> dict[str, Any]:
    """The ``{"name", "kwargs"}`` spec of a model made by :func:`build` (ValueError otherwise)."""
    s = getattr(model, "ravine_spec", None)
    if s is None:
        raise ValueError(f"{type(model).__name__} was not built by ravine.experiments.models.build (no ravine_spec)")
    return {"name": s["name"], "kwargs": dict(s["kwargs"])}


def from_spec(s: dict[str, Any]) -> nn.Module:
    """Rebuild a model from the spec recorded by :func:`build` (weights freshly initialized)."""
    if not isinstance(s, dict) or "name" not in s or "kwargs" not in s:
        raise ValueError(f"spec must be a dict with 'name' and 'kwargs', got {s!r}")
    return build(s["name"], **s["kwargs"])


def layer_groups(model: nn.Module) -> list[list[str]]:
    """Parameter names grouped by depth, from the input (index 0) to the output (last).

    Used for layer-wise learning-rate decay: group ``i`` of ``L`` typically gets ``lr * decay**(L-1-i)``.
    Transformer: embeddings, one group per block, then final norm + head. Recurrent: embedding, the
    recurrent layers, head. MLP/CNN: one group per parameterized layer in order. Every parameter
    appears in exactly one group.
    """
    groups: list[list[str]] = []
    if isinstance(model, Transformer):
        groups.append([n for n, _ in model.named_parameters() if n.startswith(("tok_emb.", "pos_emb."))])
        for i in range(len(model.blocks)):
            groups.append([n for n, _ in model.named_parameters() if n.startswith(f"blocks.{i}.")])
        groups.append([n for n, _ in model.named_parameters() if n.startswith(("ln_f.", "head."))])
    else:
        for mod_name, mod in model.named_modules():
            own = [f"{mod_name}.{n}" if mod_name else n for n, _ in mod.named_parameters(recurse=False)]
            if own:
                groups.append(own)
    return [g for g in groups if g]
