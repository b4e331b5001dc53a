"""``ravine.experiments``: reproducible training runs on data that ships offline.

The harness (this package's modules; the chapter's experiments live in ``ravine.experiments.claims``):

- :mod:`.data`: ``load(name, seed=0, **kw)`` for ``"digits"``, ``"chars"``, ``"modadd"``, ``"parity"``,
  ``"copy"`` with fixed, recorded splits;
- :mod:`.models`: ``build(name, **kw)`` for ``"mlp"``, ``"cnn"``, ``"transformer"`` (Pre-/Post-LN),
  ``"lstm"``, ``"rnn"``; every model records its constructor arguments;
- :mod:`.config`: ``TrainConfig``, everything that defines a run, and the hash that names it;
- :mod:`.train`: ``train(config, run_dir=None, resume=True, ...)`` recording per-step loss, learning
  rate, gradient norms, clipping, update/weight ratio, skipped steps, evaluations and optionally the
  top Hessian eigenvalue;
- :mod:`.runs`: run directories (config, append-only metrics, safetensors checkpoints, status) written
  atomically, ``Run`` to read them, ``RunStore`` naming runs by a hash of their config,
  ``load_model(run_dir)``;
- :mod:`.lr_find`: ``lr_find(model, loss_fn, data, optimizer, ...)``, the learning-rate range test
  (and ``lr_find_config`` on a config), with suggestions by three labelled rules;
- :mod:`.diagnose`: ``diagnose(run_dir)``, what went wrong in a run, with evidence and a suggested change.

Example::

    from ravine.experiments import TrainConfig, train
    run = train(TrainConfig(data="digits", model="mlp", model_kwargs={"hidden": [64]},
                            optimizer="adam", optimizer_kwargs={"lr": 1e-3}, steps=500))
    run.status, run.evals[-1]["test_acc"]
"""

from .config import TrainConfig
from .data import Dataset
from .data import load as load_data
from .data import names as data_names
from .diagnose import Diagnosis, Finding, diagnose
from .lr_find import LRFindResult, Suggestion, lr_find, lr_find_config, suggest
from .models import build as build_model
from .models import names as model_names
from .runs import Run, RunStore, load_model, runs_root
from .train import evaluate, train

__all__ = [
    "Dataset",
    "load_data",
    "data_names",
    "build_model",
    "model_names",
    "Run",
    "RunStore",
    "load_model",
    "runs_root",
    "TrainConfig",
    "evaluate",
    "train",
    "lr_find",
    "lr_find_config",
    "suggest",
    "LRFindResult",
    "Suggestion",
    "diagnose",
    "Diagnosis",
    "Finding",
]
