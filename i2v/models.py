"""A trained Image2Vec model: encode images to codes, summarize codes in words, word sums.

`R f ≈ D x`: an image's code `R f` is close to the sum of the vectors of its words.
The four models (simple, learn-all, weak-tag, baseline) share this class; they differ in
how `R` and `D` were obtained (see `i2v/train.py`). Arrays + config live in a checkpoint
folder (`arrays.npz` + `config.json`, no pickle; see `i2v/checkpoint.py`).
"""
import numpy as np

from .sparse import _solve_support, explained, gram, omp_gram
from .text import Vocab

MODELS = ("simple", "learn-all", "weak-tag", "baseline")


def normalize_rows(a, eps=1e-12):
    """Rows scaled to unit L2 norm (zero rows stay zero), same dtype: (n, d)."""
    return a / np.maximum(np.linalg.norm(a, axis=-1, keepdims=True), eps)


class Image2Vec:
    """Learned word space + image projection.

    arrays : dict of numpy arrays
        D (d, V) unit-norm word vectors; word_weights (V,) per-word scales (1 unless weak-tag);
        learned image models: feat_mean (F,), R (d, F), optional W1 (h, F), b1 (h,), R2 (d, h);
        baseline: class_vectors (d, 1000) GloVe vectors of the ImageNet classes.
    config : dict, the model's description (kind, backbone, hyper-parameters, metrics, ...).
    """

    def __init__(self, kind, vocab, arrays, config=None):
        if kind not in MODELS:
            raise ValueError(f"unknown model kind {kind!r}; expected one of {', '.join(MODELS)}")
        self.kind, self.vocab = kind, vocab
        self.arrays = {k: np.asarray(v, dtype=np.float32) for k, v in arrays.items()}
        self.config = dict(config or {})
        D = self.arrays["D"]
        if D.shape[1] != len(vocab):
            raise ValueError(f"D has {D.shape[1]} columns but the vocabulary has {len(vocab)} words")
        self.arrays.setdefault("word_weights", np.ones(len(vocab), np.float32))
        self._gram = None
        self.fingerprint = None  # set by checkpoint.load: a hash of the arrays

    # -- the word side -------------------------------------------------------------------
    @property
    def D(self):
        return self.arrays["D"]

    @property
    def atoms(self):
        """Effective word vectors D * word_weights (d, V): what word sums and OMP use."""
        return self.arrays["D"] * self.arrays["word_weights"][None, :]

    @property
    def gram_(self):
        if self._gram is None:
            self._gram = gram(self.atoms)
        return self._gram

    @property
    def dim(self):
        return self.D.shape[0]

    def word_index(self, word):
        try:
            return self.vocab.index[word]
        except KeyError:
            raise KeyError(f"{word!r} is not in the model's vocabulary of {len(self.vocab)} words") from None

    def word_sum(self, terms):
        """Query vector sum_w weight_w * atom_w, (d,). terms: list of (word, weight)."""
        q = np.zeros(self.dim, np.float32)
        for word, weight in terms:
            q += float(weight) * self.atoms[:, self.word_index(word)]
        return q

    def visual_neighbours(self, word, k=10):
        """[(word, cosine)] of the `k` nearest columns of D (visual word similarity)."""
        j = self.word_index(word)
        D = normalize_rows(self.D.T)
        sims = D @ D[j]
        sims[j] = -np.inf
        top = np.argsort(-sims)[:k]
        return [(self.vocab.words[t], float(sims[t])) for t in top]

    # -- the image side ------------------------------------------------------------------
    def encode(self, features, logits=None):
        """Codes of images, (n, d) float32, from CNN features (n, F) (baseline: logits (n, 1000))."""
        a = self.arrays
        if self.kind == "baseline":
            if logits is None:
                raise ValueError("the baseline model encodes from ImageNet logits; pass logits=")
            logits = np.atleast_2d(np.asarray(logits, np.float64))
            top = int(self.config.get("top_classes", 5))
            p = np.exp(logits - logits.max(1, keepdims=True))
            p /= p.sum(1, keepdims=True)
            idx = np.argsort(-p, axis=1)[:, :top]
            keep = np.zeros_like(p)
            np.put_along_axis(keep, idx, np.take_along_axis(p, idx, 1), 1)
            codes = keep @ a["class_vectors"].T.astype(np.float64)
            return normalize_rows(codes).astype(np.float32)
        f = np.atleast_2d(np.asarray(features, np.float32))
        if f.shape[1] != a["feat_mean"].shape[0]:
            raise ValueError(f"features have dimension {f.shape[1]}, the model expects {a['feat_mean'].shape[0]}")
        f = normalize_rows(f - a["feat_mean"])
        codes = f @ a["R"].T
        if "W1" in a:
            h = np.maximum(f @ a["W1"].T + a["b1"], 0.0)
            codes = codes + h @ a["R2"].T
        return (codes * float(self.config.get("code_scale", 1.0))).astype(np.float32)

    # -- image -> words ------------------------------------------------------------------
    def summarize_codes(self, codes, k=3, *, non_negative=True):
        """Summaries of codes in `k` words.

        Learned models: OMP over the word atoms (sparse recovery, `i2v.sparse.omp_gram`);
        baseline: the k nearest vocabulary words to the code by cosine (no joint training).

        Returns
        -------
        words : list (n) of lists of (word, weight), strongest first.
        fit : (n,) fraction of each code's squared norm the words explain.
        """
        codes = np.atleast_2d(np.asarray(codes, np.float64))
        V = len(self.vocab)
        if not 1 <= int(k) <= V:
            raise ValueError(f"k={k}: must be between 1 and the vocabulary size {V}")
        atoms = self.atoms.astype(np.float64)
        if self.kind == "baseline":
            sims = normalize_rows(codes) @ normalize_rows(atoms.T).T
            support = np.argsort(-sims, axis=1)[:, :k]
            coef = np.take_along_axis(sims, support, 1)
            # fit: least-squares projection of the code on the chosen words
            fit = np.array([_ls_fit(atoms[:, s], c) for s, c in zip(support, codes)])
        else:
            # ridge > 0 shrinks each step's refit, so a word that co-occurs with one already
            # chosen ("young" after "boy") is not explained away entirely (chosen on dev, see README)
            ridge = float(self.config.get("omp_ridge", 0.0))
            Xy = codes @ atoms
            support, coef = omp_gram(self.gram_, Xy, k, non_negative=non_negative, ridge=ridge)
            if ridge:  # report plain least-squares weights of the chosen words (no shrinkage)
                active = support >= 0
                ls = _solve_support(self.gram_, Xy, np.maximum(support, 0), active)
                coef = np.where(active & ((ls > 0) | (not non_negative)), ls, coef)
            fit = explained(atoms, codes, support, coef)
        out = []
        for s, c in zip(support, coef):
            pairs = [(self.vocab.words[j], float(w)) for j, w in zip(s, c) if j >= 0]
            out.append(sorted(pairs, key=lambda p: -abs(p[1])))
        return out, fit


def _ls_fit(A, y):
    coef, *_ = np.linalg.lstsq(A, y, rcond=None)
    r = y - A @ coef
    return float(np.clip(1 - (r @ r) / max(y @ y, 1e-12), 0, 1))


def vocab_from_config(config):
    return Vocab.from_json(config["vocab"])
