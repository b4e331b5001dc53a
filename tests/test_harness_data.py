"""ravine.experiments.data against independent oracles (scikit-learn, pydoc_data, arithmetic)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from sklearn.preprocessing import StandardScaler

from ravine.experiments import data


def test_digits_matches_sklearn_with_train_standardization():
    ds = data.load("digits", seed=3)
    meta = ds.metadata()
    tr, te = meta["split"]["train"], meta["split"]["test"]
    assert sorted(tr + te) == list(range(1797)) and not set(tr) & set(te)
    assert len(te) == round(1797 * 0.2)
    bunch = load_digits()
    scaler = StandardScaler().fit(bunch.data[tr])
    np.testing.assert_allclose(ds.x_train.numpy(), scaler.transform(bunch.data[tr]), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ds.x_test.numpy(), scaler.transform(bunch.data[te]), rtol=1e-5, atol=1e-5)
    assert ds.y_train.tolist() == bunch.target[tr].tolist()
    assert ds.y_test.tolist() == bunch.target[te].tolist()
    assert ds.dims["in_features"] == 64 and ds.dims["n_classes"] == 10


def test_same_seed_same_split_other_seed_other_split():
    a, b, c = data.load("digits", seed=0), data.load("digits", seed=0), data.load("digits", seed=1)
    assert a.metadata()["split"] == b.metadata()["split"]
    assert torch.equal(a.x_train, b.x_train)
    assert a.metadata()["split"]["test"] != c.metadata()["split"]["test"]


def test_chars_corpus_vocab_and_split():
    from pydoc_data.topics import topics

    text = "".join(topics[k] for k in sorted(topics))
    ds = data.load("chars", block_size=16, val_fraction=0.1, eval_blocks=5)
    assert ds.decode(ds.tokens) == text
    assert ds.vocab == sorted(set(text))
    assert ds.decode(ds.train_tokens) + ds.decode(ds.test_tokens) == text
    assert len(ds.train_tokens) == round(len(text) * 0.9)
    g = torch.Generator().manual_seed(0)
    x, y = next(ds.batches(16, 4, g))
    assert x.shape == (4, 16) and torch.equal(x[:, 1:], y[:, :-1])
    # Each row is a contiguous piece of the training text, and y continues it by one character.
    train_text = ds.decode(ds.train_tokens)
    for row_x, row_y in zip(x, y):
        s = ds.decode(row_x) + ds.decode(row_y[-1:])
        assert s in train_text
    xe, ye = ds.eval_data("test")
    assert xe.shape == (5, 16) and torch.equal(xe[:, 1:], ye[:, :-1])
    assert ds.decode(xe[0]) == ds.decode(ds.test_tokens[:16])  # evaluation blocks are fixed positions


def test_modadd_targets_and_split():
    p = 11
    ds = data.load("modadd", seed=2, p=p, train_fraction=0.3)
    for x, y in (ds.eval_data("train"), ds.eval_data("test")):
        a, plus, b, eq = x.unbind(1)
        assert (plus == p).all() and (eq == p + 1).all()
        assert (y[:, :-1] == data.IGNORE_INDEX).all()
        assert torch.equal(y[:, -1], (a + b) % p)
    pairs = {tuple(r.tolist()) for r in torch.cat([ds.x_train, ds.x_test])[:, [0, 2]]}
    assert len(pairs) == p * p
    assert ds.n_train == round(p * p * 0.3)
    meta = ds.metadata()
    assert meta["split"]["train"] == sorted((ds.x_train[:, 0] * p + ds.x_train[:, 2]).tolist())


def test_parity_labels_are_the_parity_of_the_relevant_bits():
    ds = data.load("parity", seed=5, n_bits=12, k=3, n_train=300, n_test=100)
    rel = ds.metadata()["relevant_bits"]
    assert len(rel) == 3 and len(set(rel)) == 3
    for x, y in (ds.eval_data("train"), ds.eval_data("test")):
        assert set(x.unique().tolist()) == {-1.0, 1.0}
        ones = (x[:, rel] < 0).sum(1)  # number of -1 among relevant bits
        assert torch.equal(y, (ones % 2).long())


def test_copy_task_targets_recall_the_prefix():
    ds = data.load("copy", seed=1, length=4, delay=6, n_symbols=5, n_train=50, n_test=10)
    x, y = ds.eval_data("train")
    assert x.shape == (50, 6 + 8)
    assert torch.equal(y[:, -4:], x[:, :4])
    assert (y[:, :-4] == data.IGNORE_INDEX).all()
    assert (x[:, 4 + 6 - 1] == 6).all()  # the delimiter
    assert ((x[:, :4] >= 1) & (x[:, :4] <= 5)).all()
    assert ds.dims["vocab_size"] == 7


def test_sampler_epochs_cover_every_sample_once_and_state_round_trips():
    ds = data.load("parity", seed=0, n_bits=4, k=2, n_train=10, n_test=5)
    s = ds.sampler(batch_size=4, seed=0)
    seen = []
    for _ in range(5):  # 20 samples = two epochs
        x, _ = s.next()
        seen.append(x)
    rows = torch.cat(seen)
    for epoch in (rows[:10], rows[10:]):
        # Each epoch is a permutation of the training set.
        key = lambda t: sorted(map(tuple, t.tolist()))  # noqa: E731
        assert key(epoch) == key(ds.x_train)
    state = s.state_dict()
    s2 = ds.sampler(batch_size=4, seed=123)
    s2.load_state_dict(state)
    for _ in range(4):
        assert torch.equal(s.next()[0], s2.next()[0])
    full = ds.sampler(batch_size=None)
    assert torch.equal(full.next()[0], ds.x_train)


def test_cross_entropy_ignores_positions():
    logits = torch.randn(2, 3, 5)
    t = torch.tensor([[1, -100, 2], [-100, -100, 4]])
    keep = t != -100
    want = torch.nn.functional.cross_entropy(logits[keep], t[keep])
    assert torch.allclose(data.cross_entropy(logits, t), want)
    c, n = data.accuracy_counts(logits, t)
    assert n == 3 and c == int((logits[keep].argmax(-1) == t[keep]).sum())


def test_bad_input_messages():
    with pytest.raises(ValueError, match=r"unknown dataset name 'mnist'; valid names: chars, copy, digits"):
        data.load("mnist")
    with pytest.raises(TypeError, match=r"dataset 'digits' got unexpected argument\(s\) \['p'\]"):
        data.load("digits", p=3)
    with pytest.raises(ValueError, match=r"train_fraction must be in \(0, 1\), got 1.5"):
        data.load("modadd", train_fraction=1.5)
    with pytest.raises(ValueError, match=r"k must be an integer in \[1, 4\], got 5"):
        data.load("parity", n_bits=4, k=5)
    with pytest.raises(TypeError, match=r"seed must be an int, got 'a'"):
        data.load("digits", seed="a")
    with pytest.raises(ValueError, match=r"batch_size=None \(full batch\) is not available for 'chars'"):
        data.load("chars", block_size=8).sampler(None).next()
    with pytest.raises(ValueError, match=r"split must be one of 'train', 'test', got 'val'"):
        data.load("digits").eval_data("val")


def test_teacher_task_is_seeded_nested_and_flips_the_stated_share_of_labels():
    a = data.load("teacher", seed=5, n_train=2000, n_test=500)
    b = data.load("teacher", seed=5, n_train=2000, n_test=500)
    c = data.load("teacher", seed=6, n_train=2000, n_test=500)
    assert a.x_train.shape == (2000, 16) and a.y_train.shape == (2000,) and a.x_test.shape == (500, 16)
    assert a.dims == {"in_features": 16, "n_classes": 4} and a.x_train.dtype == torch.float32
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_train, b.y_train)
    assert not torch.equal(a.x_train, c.x_train)
    # the training set of size n is the prefix of a larger one; the test set does not depend on n_train
    big = data.load("teacher", seed=5, n_train=20_000, n_test=500)
    assert torch.equal(big.x_train[:2000], a.x_train) and torch.equal(big.y_train[:2000], a.y_train)
    assert torch.equal(big.x_test, a.x_test) and torch.equal(big.y_test, a.y_test)
    # inputs are standard normal (statistical check: 20000 x 16 draws)
    assert abs(float(big.x_train.mean())) < 0.02 and abs(float(big.x_train.std()) - 1.0) < 0.02
    # label noise p replaces a label by a uniform class: it changes with probability p (C - 1) / C
    clean = data.load("teacher", seed=5, n_train=20_000, n_test=10, label_noise=0.0)
    noisy = data.load("teacher", seed=5, n_train=20_000, n_test=10, label_noise=0.3)
    changed = float((clean.y_train != noisy.y_train).float().mean())
    assert changed == pytest.approx(0.3 * 3 / 4, abs=4 * (0.225 * 0.775 / 20_000) ** 0.5)
    assert torch.equal(clean.x_train, noisy.x_train)
    # input_scale s: the same labels, feature j scaled by s^(j/15), input covariance condition number s^2
    scaled = data.load("teacher", seed=5, n_train=20_000, n_test=10, input_scale=10.0)
    assert torch.equal(scaled.y_train, big.y_train)
    torch.testing.assert_close(scaled.x_train, big.x_train * 10.0 ** (torch.arange(16) / 15), rtol=1e-6, atol=1e-6)
    cov = np.cov(scaled.x_train.double().numpy().T)
    assert np.linalg.cond(cov) == pytest.approx(100.0, rel=0.1)
    with pytest.raises(ValueError, match=r"input_scale must be in \[1, 1e\+06\], got 0.5"):
        data.load("teacher", input_scale=0.5)
    with pytest.raises(ValueError, match=r"label_noise must be in \[0, 1\), got 1.0"):
        data.load("teacher", label_noise=1.0)
    with pytest.raises(ValueError, match=r"n_classes must be an integer in \[2, "):
        data.load("teacher", n_classes=1)
