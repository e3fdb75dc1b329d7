"""A trained Image2Vec model: encode images to codes, summarize codes in words, word sums.

`R f ≈ D x`: an image's code `R f` is close to the sum of the vectors of its words.
The four models (simple, learn-all, weak-tag, baseline) share this class; they differ in
how `R` and `D` were obtained (see `i2v/train.py`). Arrays + config live in a checkpoint
folder (`arrays.npz` + `config.json`, no pickle; see `i2v/checkpoint.py`).
"""
import numpy as np

from .features import DEFAULT_BACKBONE
from .sparse import _solve_support, explained, gram, omp_gram
from .text import Vocab

MODELS = ("simple", "learn-all", "weak-tag", "baseline")
OMP_RIDGE = 3.0  # ridge on OMP's refits when summarizing, chosen on the Flickr8k dev split (README "Results")


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
        self.arrays.setdefault("word_weights", np.ones(len(vocab), np.float32))
        _check_model(self)
        self._gram = None
        self.fingerprint = None  # set by checkpoint.load: a hash of the arrays
        self.name = kind  # set by checkpoint.load: the name or folder it was loaded as

    @property
    def backbone(self):
        """Name of the CNN whose outputs this model encodes (recorded at training)."""
        return self.config.get("backbone", DEFAULT_BACKBONE)

    # -- the word side -------------------------------------------------------------------
    @property
    def D(self):
        return self.arrays["D"]

    @property
    def atoms(self):
        """Effective word vectors D * word_weights (d, V): what word sums and OMP use (cached)."""
        if getattr(self, "_atoms", None) is None:
            self._atoms = self.arrays["D"] * self.arrays["word_weights"][None, :]
        return self._atoms

    @property
    def gram_(self):
        if self._gram is None:
            self._gram = gram(self.atoms)
        return self._gram

    @property
    def atoms64(self):
        """`atoms` in float64 (what OMP works in), cached: a per-summary copy cost more than the OMP."""
        if getattr(self, "_atoms64", None) is None:
            self._atoms64 = self.atoms.astype(np.float64)
        return self._atoms64

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
            q += float(weight) * self.word_atom(word)
        return q

    def word_atom(self, word):
        """A word's effective vector (d,): its column times its weight; for a word outside the
        vocabulary that GloVe knows, its column through the word map (open-world models only)."""
        if word in self.vocab:
            return self.atoms[:, self.vocab.index[word]]
        if "word_map" in self.arrays:
            from .wordvec import load_glove

            kv = load_glove()
            if word in kv.key_to_index:
                col = self.arrays["word_map"] @ kv[word]
                weight = float(self.config.get("source_weights", {}).get("word-vectors", 1.0))
                return (weight * col / max(np.linalg.norm(col), 1e-12)).astype(np.float32)
        raise KeyError(f"{word!r} is not in the model's vocabulary of {len(self.vocab)} words")

    def word_source(self, word):
        """Where a word's column comes from: "captions", "imagenet" or "word-vectors"."""
        return self.vocab.source(word) if word in self.vocab else "word-vectors"

    def knows(self, word):
        """True for vocabulary words and, in open-world models, for the common words GloVe knows."""
        if word in self.vocab:
            return True
        if "word_map" not in self.arrays:
            return False
        from .wordvec import is_common

        return is_common(word)

    def most_down_weighted(self, n=20):
        """[(word, weight)] of the `n` smallest learned word weights ([] when all weights are 1)."""
        w = self.arrays["word_weights"]
        if np.all(w == 1.0):
            return []
        return [(self.vocab.words[j], float(w[j])) for j in np.argsort(w, kind="stable")[:n]]

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
        atoms = self.atoms64
        if self.kind == "baseline":
            sims = normalize_rows(codes) @ normalize_rows(atoms.T).T
            support = np.argsort(-sims, axis=1)[:, :k]
            coef = np.take_along_axis(sims, support, 1)
            # fit: least-squares projection of the code on the chosen words
            fit = np.array([_ls_fit(atoms[:, s], c) for s, c in zip(support, codes)])
        else:
            # ridge > 0 shrinks each step's refit, so a word that co-occurs with one already
            # chosen ("young" after "boy") is not explained away entirely (chosen on dev, see README)
            ridge = float(self.config.get("omp_ridge", 0.0))  # 0.0: plain OMP (models built by hand)
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


def vocab_from_config(vocab_json):
    """The Vocab stored in a checkpoint's config ({"words": [...], "counts": [...]})."""
    if not isinstance(vocab_json, dict) or not isinstance(vocab_json.get("words"), list) \
            or not all(isinstance(w, str) for w in vocab_json["words"]):
        raise ValueError("vocab: expected {\"words\": [str, ...], \"counts\": [int, ...]}")
    counts = vocab_json.get("counts") or [0] * len(vocab_json["words"])
    if len(counts) != len(vocab_json["words"]):
        raise ValueError("vocab: words and counts differ in length")
    forms = vocab_json.get("forms") or {}
    words = set(vocab_json["words"])
    if not isinstance(forms, dict) or not all(isinstance(t, str) and v in words for t, v in forms.items()):
        raise ValueError("vocab: forms must map strings to vocabulary words")
    sources = vocab_json.get("sources")
    if sources is not None and (not isinstance(sources, list) or len(sources) != len(vocab_json["words"])
                                or not all(s in ("captions", "imagenet", "word-vectors") for s in sources)):
        raise ValueError("vocab: sources must list captions / imagenet / word-vectors, one per word")
    return Vocab(list(vocab_json["words"]), [int(c) for c in counts], dict(forms), sources)


def _check_model(model):
    """Shapes, finite values and a unique vocabulary; ValueError naming the bad field."""
    a, V = model.arrays, len(model.vocab)
    if len(set(model.vocab.words)) != V:
        raise ValueError("vocab: words are not unique")
    if "D" not in a or a["D"].ndim != 2 or a["D"].shape[1] != V:
        shape = a["D"].shape if "D" in a else None
        raise ValueError(f"D: shape {shape}, expected (d, {V}) for a vocabulary of {V} words")
    d = a["D"].shape[0]
    expected = {"word_weights": (V,)}
    if "word_map" in a:
        expected["word_map"] = (d, a["word_map"].shape[-1])
    if model.kind == "baseline":
        expected["class_vectors"] = (d, 1000)
    else:
        if "R" not in a or a["R"].ndim != 2 or a["R"].shape[0] != d:
            raise ValueError(f"R: shape {a['R'].shape if 'R' in a else None}, expected ({d}, n_features)")
        expected["feat_mean"] = (a["R"].shape[1],)
        if "W1" in a:
            h = a["W1"].shape[0] if a["W1"].ndim == 2 else -1
            expected.update(W1=(h, a["R"].shape[1]), b1=(h,), R2=(d, h))
    for name, shape in expected.items():
        if name not in a or a[name].shape != shape:
            raise ValueError(f"{name}: shape {a[name].shape if name in a else None}, expected {shape}")
    for name, arr in a.items():
        if not np.isfinite(arr).all():
            raise ValueError(f"{name}: has NaN or infinite values")
    for key in ("omp_ridge", "code_scale"):
        if key in model.config:
            v = model.config[key]
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not np.isfinite(v) or v < 0:
                raise ValueError(f"{key}: {v!r} is not a finite number >= 0")
