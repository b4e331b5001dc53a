"""``ravine.optim``: optimizers as chains of small gradient transformations (Optax's model) that
run in any PyTorch training loop with torch's exact numbers.

Functional use (any list of tensors, including a batch of 2D points)::

    t = ravine.optim.adam(0.1)
    state = t.init(params)
    updates, state = t.update(grads, state, params)
    ravine.optim.apply_updates(params, updates)

In a torch training loop::

    opt = ravine.optim.Optimizer(model.parameters(),
                                 ravine.optim.chain(ravine.optim.clip_by_global_norm(1.0),
                                                    ravine.optim.adamw(3e-4)))
    # or drop-in: ravine.optim.AdamW(model.parameters(), lr=3e-4)

``ravine.optim.CONSTRAINTS`` holds the allowed range of every hyperparameter (the library's checks
and the web API's bounds both come from it).

Only torch, numpy and ravine's pure private helpers are imported here (the core layer). The
modules: :mod:`~ravine.optim.base` (``Transform``, ``chain``, list ops), :mod:`~ravine.optim.transforms`
(the primitives), :mod:`~ravine.optim.alias` (the named optimizers), :mod:`~ravine.optim.adapter` (the
torch ``Optimizer``), :mod:`~ravine.optim.fused` (its flat-buffer and compiled path); one module
each for today's optimizers beyond the chapter: ``lion``, ``adopt``, ``adafactor``, ``muon``,
``schedule_free``, ``soap``; private: ``_constraints`` (the ranges), ``_state`` (where a chain's
state lives in a torch optimizer).
"""

from ._constraints import CONSTRAINTS
from .adafactor import Adafactor, adafactor, clip_by_block_rms, scale_by_factored_rms, scale_by_param_rms
from .adapter import SGD, Adagrad, Adam, AdamW, Optimizer, RMSprop
from .adopt import ADOPT, adopt, scale_by_adopt
from .alias import (
    _register,
    adagrad,
    adam,
    adam_l2,
    adamw,
    gd,
    get,
    hyperparam_names,
    momentum,
    names,
    nesterov,
    rmsprop,
    sgd,
    torch_adagrad,
    torch_adam,
    torch_adamw,
    torch_rmsprop,
    torch_sgd,
)
from .base import Transform, apply_updates, chain, chain_info, resolve, transform
from .lion import Lion, lion, scale_by_lion
from .muon import Muon, MuonWithAdamW, muon, muon_param_groups, muon_with_adamw, orthogonalize, scale_by_shape
from .schedule_free import (
    ScheduleFreeAdamW,
    scale_by_debiased_rms,
    schedule_free,
    schedule_free_adamw,
    schedule_free_eval,
)
from .soap import SOAP, scale_by_soap, soap
from .transforms import (
    add_decayed_weights,
    add_l2,
    add_noise,
    clip_adaptive,
    clip_by_global_norm,
    clip_by_value,
    identity,
    scale,
    scale_by_adam,
    scale_by_learning_rate,
    scale_by_rms,
    scale_by_rss,
    scale_by_schedule,
    trace,
)

__all__ = [
    "CONSTRAINTS",
    "Transform", "chain", "apply_updates", "chain_info", "resolve", "transform",
    "identity", "scale", "scale_by_learning_rate", "scale_by_schedule", "trace", "scale_by_rms",
    "scale_by_adam", "scale_by_rss", "add_decayed_weights", "add_l2", "clip_by_global_norm",
    "clip_by_value", "clip_adaptive", "add_noise",
    "gd", "sgd", "momentum", "nesterov", "rmsprop", "adam", "adamw", "adam_l2", "adagrad",
    "get", "names", "hyperparam_names",
    "torch_sgd", "torch_adam", "torch_adamw", "torch_rmsprop", "torch_adagrad",
    "Optimizer", "SGD", "Adam", "AdamW", "RMSprop", "Adagrad",
    "schedule_free_adamw", "schedule_free", "scale_by_debiased_rms", "schedule_free_eval", "ScheduleFreeAdamW",
    "soap", "scale_by_soap", "SOAP",
    "lion", "scale_by_lion", "Lion", "adopt", "scale_by_adopt", "ADOPT",
    "adafactor", "scale_by_factored_rms", "clip_by_block_rms", "scale_by_param_rms", "Adafactor",
    "muon", "muon_with_adamw", "muon_param_groups", "orthogonalize", "scale_by_shape", "Muon", "MuonWithAdamW",
]

# the optimizers defined in their own modules join the registry of get() and names() (alias.py
# cannot import them: they build on the adapter, which imports alias)
for _factory in (schedule_free_adamw, lion, adopt):
    _register(_factory.__name__, _factory, elementwise=True)
for _factory in (soap, adafactor, muon):
    _register(_factory.__name__, _factory, elementwise=False)
del _factory
