"""Metrics (pure functions) and the reference methods the models are compared with."""
import numpy as np

from .models import normalize_rows


def precision_recall_at_k(predicted, truth, k):
    """Mean precision@k and recall@k of word lists against sets of true words.

    Parameters
    ----------
    predicted : list (n) of lists of words, best first (only the first k are used).
    truth : list (n) of sets of words (the union of the image's caption words).
    """
    if len(predicted) != len(truth):
        raise ValueError(f"{len(predicted)} predictions for {len(truth)} images")
    p, r = [], []
    for pred, true in zip(predicted, truth):
        top = list(pred)[:k]
        hit = len(set(top) & set(true))
        p.append(hit / k)
        r.append(hit / len(true) if true else 0.0)
    return float(np.mean(p)), float(np.mean(r))


def ranks(codes, queries, target, *, metric="l2"):
    """Rank (0 = first) of each query's target image among all images.

    codes : (n_images, d); queries : (n_queries, d); target : (n_queries,) image index.
    metric : "l2" (smaller distance first) or "ip" (larger inner product first).
    """
    codes = np.asarray(codes, np.float64)
    queries = np.asarray(queries, np.float64)
    if metric == "l2":
        score = -(((queries ** 2).sum(1)[:, None]) - 2 * queries @ codes.T + (codes ** 2).sum(1)[None, :])
    elif metric == "ip":
        score = queries @ codes.T
    else:
        raise ValueError(f"metric={metric!r}: expected 'l2' or 'ip'")
    return ranks_from_scores(score, target)


def ranks_from_scores(score, target):
    """Rank of each target given a (n_queries, n_images) score matrix (higher is better)."""
    target = np.asarray(target)
    own = score[np.arange(len(target)), target]
    return (score > own[:, None]).sum(1)


def recall_summary(r, prefix="t2i_"):
    r = np.asarray(r)
    return {f"{prefix}r@1": float((r < 1).mean()), f"{prefix}r@5": float((r < 5).mean()),
            f"{prefix}r@10": float((r < 10).mean()), f"{prefix}medr": float(np.median(r) + 1)}


# -- references -------------------------------------------------------------------------
def knn_scores(F_train, X_train, F_test, n_neighbors=20):
    """Word votes of the `n_neighbors` nearest training images (cosine): (n_test, V)."""
    a = F_train / np.linalg.norm(F_train, axis=1, keepdims=True)
    b = F_test / np.linalg.norm(F_test, axis=1, keepdims=True)
    sims = b @ a.T
    k = min(n_neighbors, len(a))
    nn = np.argpartition(-sims, k - 1, axis=1)[:, :k]
    return X_train[nn].mean(1)


def linear_scores(F_train, X_train, F_test, alpha=10.0):
    """Ridge regression word classifier on normalized features: (n_test, V) scores."""
    mean = F_train.mean(0)
    def norm(F):
        F = F - mean
        return F / np.linalg.norm(F, axis=1, keepdims=True)
    A, B = norm(F_train), norm(F_test)
    W = np.linalg.solve(A.T @ A + alpha * np.eye(A.shape[1]), A.T @ (X_train - X_train.mean(0)))
    return B @ W + X_train.mean(0)


def top_words(scores, k):
    """Indices of the k highest scores per row: (n, k)."""
    return np.argsort(-scores, axis=1, kind="stable")[:, :k]


# -- the evaluation table -----------------------------------------------------------------
def truth_sets(captions, vocab):
    """Union of each image's caption words, restricted to the vocabulary: list of sets."""
    return [{w for c in caps for w in c if w in vocab} for caps in captions]


def caption_queries(captions, vocab):
    """Words -> image queries: one per caption with >= 1 vocabulary word.

    Returns word index lists and the image index of each query."""
    queries, target = [], []
    for i, caps in enumerate(captions):
        for c in caps:
            idx = [vocab.index[w] for w in dict.fromkeys(c) if w in vocab]
            if idx:
                queries.append(idx)
                target.append(i)
    return queries, np.array(target, dtype=np.int64)


def _query_matrix(queries, V):
    Q = np.zeros((len(queries), V), np.float32)
    for r, idx in enumerate(queries):
        Q[r, idx] = 1.0
    return Q


def score_model(model, codes, captions):
    """Metrics of one model on a test set: p@k/r@k of OMP summaries and words->image recall.

    codes : (n, d) the test images' codes under `model`; captions : per image, per caption, its words.
    """
    vocab = model.vocab
    truth = truth_sets(captions, vocab)
    out = {}
    for k in (3, 5):
        summaries, _ = model.summarize_codes(codes, k)
        p, r = precision_recall_at_k([[w for w, _ in s] for s in summaries], truth, k)
        out[f"p@{k}"], out[f"r@{k}"] = p, r
    queries, target = caption_queries(captions, vocab)
    Q = _query_matrix(queries, len(vocab)) @ model.atoms.T
    out.update(recall_summary(ranks(codes, Q, target, metric="l2")))
    out.update(recall_summary(ranks(codes, Q, target, metric="ip"), "ip_t2i_"))
    # what the index does by default: L2 between unit-length codes and queries
    out.update(recall_summary(ranks(normalize_rows(codes), normalize_rows(Q), target, metric="l2"), "unit_t2i_"))
    return out


def score_reference(scores, vocab, captions):
    """Metrics of a word-scoring reference: top-k words; words->image by summed scores."""
    truth = truth_sets(captions, vocab)
    out = {}
    for k in (3, 5):
        top = top_words(scores, k)
        p, r = precision_recall_at_k([[vocab.words[j] for j in row] for row in top], truth, k)
        out[f"p@{k}"], out[f"r@{k}"] = p, r
    queries, target = caption_queries(captions, vocab)
    out.update(recall_summary(ranks_from_scores(_query_matrix(queries, len(vocab)) @ scores.T, target)))
    return out


def references(F_train, X_train, F_test, vocab, captions):
    """The reference rows of the table: frequency prior, kNN-20 caption transfer, ridge."""
    freq = np.tile(X_train.sum(0), (len(F_test), 1))
    freq = freq + 1e-6 * np.random.default_rng(0).random(freq.shape)  # random ties for t2i
    return {
        "ref:frequency-prior": score_reference(freq, vocab, captions),
        "ref:knn-20": score_reference(knn_scores(F_train, X_train, F_test, 20), vocab, captions),
        "ref:linear-ridge": score_reference(linear_scores(F_train, X_train, F_test), vocab, captions),
    }
