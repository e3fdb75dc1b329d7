import json

import numpy as np
import pytest

from i2v import checkpoint
from i2v.evaluate import precision_recall_at_k
from i2v.models import Image2Vec
from i2v.text import Vocab
from i2v.train import JointConfig, fit_joint, fit_simple, weak_tags


def synthetic(n=500, V=20, nf=64, seed=0):
    """Images whose features are sums of per-word directions: words are recoverable."""
    rng = np.random.default_rng(seed)
    A = rng.normal(size=(V, nf))
    words = [rng.choice(V, 3, replace=False) for _ in range(n)]
    F = np.stack([A[w].sum(0) for w in words]) + 0.3 * rng.normal(size=(n, nf)) + 5.0
    vocab = Vocab([f"w{j}" for j in range(V)], [n // 5] * V)
    captions = [[[f"w{j}" for j in w]] for w in words]
    return F.astype(np.float32), captions, vocab, words


def p_at_3(model, F, words):
    summ, _ = model.summarize_codes(model.encode(F), 3)
    return precision_recall_at_k([[w for w, _ in s] for s in summ], [{f"w{j}" for j in w} for w in words], 3)[0]


def test_simple_model_unit_columns_and_recovery():
    F, caps, vocab, words = synthetic()
    X = np.zeros((len(F), len(vocab)), np.float32)
    for i, w in enumerate(words):
        X[i, w] = 1
    m = fit_simple(F[:400], X[:400], vocab, dim=48)
    np.testing.assert_allclose(np.linalg.norm(m.D, axis=0), 1, atol=1e-5)
    assert p_at_3(m, F[400:], words[400:]) > 0.6  # chance is 0.15


def test_joint_model_learns_and_does_not_collapse():
    F, caps, vocab, words = synthetic()
    cfg = JointConfig(dim=32, hidden=0, epochs=40, batch_size=100, input_dropout=0.0, lr=1e-2)
    m = fit_joint(F[:400], caps[:400], vocab, cfg, log=None)
    np.testing.assert_allclose(np.linalg.norm(m.D, axis=0), 1, atol=1e-5)
    assert p_at_3(m, F[400:], words[400:]) > 0.8
    codes = m.encode(F[400:])
    d = np.linalg.norm(codes[:, None] - codes[None], axis=-1)
    assert np.median(d) > 0.3 * np.median(np.linalg.norm(codes, axis=1))  # codes stay apart
    q = m.word_sum([(f"w{j}", 1.0) for j in words[400]])
    assert np.argmin(np.linalg.norm(codes - q, axis=1)) == 0 or \
        np.argsort(np.linalg.norm(codes - q, axis=1)).tolist().index(0) < 5


def test_weak_tag_weights_scale_down_noise_words():
    F, caps, vocab, words = synthetic(n=600, V=20)
    rng = np.random.default_rng(1)
    vocab = Vocab(vocab.words + ["gbr"], vocab.counts + [300])
    # 'gbr' is tagged on a random half of the images: it has nothing to do with their content
    caps = [[c[0] + (["gbr"] if rng.random() < 0.5 else [])] for c in caps]
    cfg = JointConfig(dim=32, hidden=0, epochs=40, batch_size=100, input_dropout=0.0, lr=1e-2, word_weights=True)
    m = fit_joint(F, caps, vocab, cfg, kind="weak-tag", log=None)
    w = m.arrays["word_weights"]
    assert w[vocab.index["gbr"]] < np.median(w)


def test_weak_tags_simulation():
    vocab = Vocab(["dog", "grass", "ball", "red"], [4, 3, 2, 1])
    caps = [[["dog", "grass"], ["dog", "ball"]]] * 50
    tags = weak_tags(caps, vocab, drop=0.0, wrong=0.0, seed=0)
    assert all({w for w, _ in t} in ({"dog", "grass"}, {"dog", "ball"}) for t in tags)
    tags = weak_tags(caps, vocab, drop=0.5, wrong=0.5, seed=0)
    assert any("red" in {w for w, _ in t} for t in tags)


def test_checkpoint_round_trip_without_pickle(tmp_path):
    F, caps, vocab, words = synthetic(n=100)
    X = np.zeros((len(F), len(vocab)), np.float32)
    m = fit_simple(F, X + np.eye(len(vocab))[np.arange(len(F)) % len(vocab)], vocab, dim=16)
    m.config["note"] = "x"
    checkpoint.save(m, tmp_path / "ck")
    cfg = json.loads((tmp_path / "ck" / "config.json").read_text())
    assert cfg["kind"] == "simple" and cfg["vocab"]["words"] == vocab.words
    with np.load(tmp_path / "ck" / "arrays.npz", allow_pickle=False) as z:
        assert set(z.files) >= {"D", "R", "feat_mean"}
    m2 = checkpoint.load(tmp_path / "ck")
    np.testing.assert_allclose(m.encode(F), m2.encode(F), rtol=1e-5)
    assert m2.config["note"] == "x"


def test_boundaries():
    vocab = Vocab(["a", "b"], [1, 1])
    with pytest.raises(ValueError, match="unknown model kind 'fancy'"):
        Image2Vec("fancy", vocab, {"D": np.eye(2)})
    with pytest.raises(ValueError, match=r"D: shape \(2, 3\)"):
        Image2Vec("simple", vocab, {"D": np.ones((2, 3))})
    m = Image2Vec("simple", vocab, {"D": np.eye(2), "R": np.eye(2), "feat_mean": np.zeros(2)})
    with pytest.raises(KeyError, match="'zebra' is not in the model's vocabulary"):
        m.word_sum([("zebra", 1)])
    with pytest.raises(ValueError, match="k=5"):
        m.summarize_codes(np.ones((1, 2)), 5)
    with pytest.raises(ValueError, match="dimension 3"):
        m.encode(np.ones((1, 3)))
    with pytest.raises(KeyError, match="no model 'nope'"):
        checkpoint.load("nope")
