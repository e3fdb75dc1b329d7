"""Open-world words: give every everyday word a column of D, also words no training photo shows.

Three sources, recorded per word in the checkpoint (`Vocab.sources`):

- "captions": words of the training captions; their columns are learned with R (as before).
- "imagenet": words naming ImageNet classes (head nouns such as "pizza", "zebra", "laptop", and
  the nearest caption-word hypernym such as "dog" for the 120 breeds; `imagenet_words.tsv`).
  The network's own ImageNet head says how likely each training photo shows such a word; a
  word's column is the ridge regression of that log-probability on the photos' codes, i.e.
  the direction in code space along which the head's evidence for the word grows. It works
  because a code keeps much of what the feature knows: on Flickr8k dev photos the regressed
  directions predict the head's log-probabilities from the codes alone.
- "word-vectors": everyday words (COCO caption text) that neither covers get a column from a
  linear map of their GloVe vector into the word space, fit on the words that have columns
  (DeViSE-style); the same map gives a column to any word GloVe knows, at query time.

Columns of new words enter OMP with one weight per source; the weight is the largest that
keeps Flickr8k dev P@3 within DEV_TOLERANCE of the original model (chosen on dev only).
"""
import csv
from pathlib import Path

import numpy as np

from .models import normalize_rows

CLASS_WORDS = Path(__file__).with_name("imagenet_words.tsv")
SOURCES = ("captions", "imagenet", "word-vectors")
SOURCE_LABELS = {"captions": "learned from captioned photos", "imagenet": "from the ImageNet head",
                 "word-vectors": "from word vectors (GloVe)"}
DEV_TOLERANCE = 0.01  # at most this much Flickr8k dev P@3 may be lost for the wider vocabulary


def load_class_words(path=CLASS_WORDS):
    """{class index (0-999): [words]} from the shipped table (class_index, wnid, name, words)."""
    out = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            out[int(row["class_index"])] = [w for w in row["words"].split(",") if w]
    if len(out) != 1000:
        raise ValueError(f"{path}: {len(out)} classes, expected 1000")
    return out


def class_word_targets(logits, class_words, words):
    """Log-probability that each photo shows each word: log sum of its classes' probabilities.

    logits : (n, 1000) ImageNet logits. Returns (n, len(words)) float64.
    """
    L = np.asarray(logits, np.float64)
    P = np.exp(L - L.max(1, keepdims=True))
    P /= P.sum(1, keepdims=True)
    members = {w: [c for c, ws in class_words.items() if w in ws] for w in words}
    return np.log(np.stack([P[:, members[w]].sum(1) for w in words], 1) + 1e-4)


def regress_columns(codes, targets, ridge=1.0):
    """Unit columns (d, m): ridge regression of each (centred) target on the (centred) codes.

    codes : (n, d); targets : (n, m).
    """
    C = np.asarray(codes, np.float64)
    C = C - C.mean(0)
    T = np.asarray(targets, np.float64)
    T = T - T.mean(0)
    W = np.linalg.solve(C.T @ C + ridge * np.eye(C.shape[1]), C.T @ T)
    return normalize_rows(W.T).T.astype(np.float32)


def fit_word_map(word_vectors, columns, ridge=1.0):
    """Linear map (d, g) from word vectors (m, g) to unit columns (d, m), by ridge least squares."""
    G = np.asarray(word_vectors, np.float64)
    D = np.asarray(columns, np.float64)
    M = np.linalg.solve(G.T @ G + ridge * np.eye(G.shape[1]), G.T @ D.T).T
    return M.astype(np.float32)


def mapped_columns(word_map, word_vectors):
    """Unit columns (d, m) for word vectors (m, g) through a map from `fit_word_map`."""
    return normalize_rows(np.asarray(word_vectors, np.float32) @ word_map.T).T


def build_class_words(labels_tsv, caption_words, wordnet_dir="/usr/share/wordnet", known=None):
    """The class -> words table: the class name's head noun and its other nouns that captions use,
    single-word synonyms captions use, and the nearest WordNet hypernym captions use (e.g. "dog").

    labels_tsv : a file with class_index, wnid, clean_name, synonyms (imagenet_samples' labels.tsv).
    caption_words : set of words everyday captions use; known : words the word vectors know.
    Returns a list of (class_index, wnid, clean_name, [words]).
    """
    nouns = _wordnet_nouns(Path(wordnet_dir) / "data.noun")
    adjectives = {line.split(" ", 1)[0] for line in open(Path(wordnet_dir) / "index.adj", encoding="latin-1")
                  if not line.startswith(" ")}
    lemmas = {w for ws, _ in nouns.values() for w in ws} - adjectives  # "toilet" from "toilet seat", not "great"
    known = known if known is not None else caption_words
    out = []
    with open(labels_tsv, newline="") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            tokens = [t for t in row["clean_name"].lower().replace("-", " ").split() if t.isalpha()]
            words = [tokens[-1]] if tokens and tokens[-1] in known else []
            words += [t for t in tokens if t in caption_words and t in lemmas and t not in words]
            for s in row["synonyms"].split(","):
                s = s.strip().lower()
                if s.isalpha() and s in caption_words and s not in words:
                    words.append(s)
            for anc in _ancestors(nouns, row["wnid"][1:]):
                hyper = [w for w in anc if w.isalpha() and w in caption_words and w not in words]
                if hyper:
                    words.append(hyper[0])
                    break
            out.append((int(row["class_index"]), row["wnid"], row["clean_name"], words))
    return out


def _wordnet_nouns(path):
    """{offset: (lemmas, hypernym offsets)} from WordNet's data.noun."""
    nouns = {}
    with open(path, encoding="latin-1") as f:
        for line in f:
            if line.startswith("  "):  # the license header
                continue
            head = line.split("|")[0].split()
            n = int(head[3], 16)
            rest = head[4 + 2 * n:]
            ptrs = rest[1:1 + 4 * int(rest[0])]
            hyper = [ptrs[i + 1] for i in range(0, len(ptrs), 4) if ptrs[i] in ("@", "@i") and ptrs[i + 2] == "n"]
            nouns[head[0]] = ([head[4 + 2 * i].lower() for i in range(n)], hyper)
    return nouns


def _ancestors(nouns, offset, max_depth=12):
    """Lemma lists of the hypernyms of `offset`, nearest first (breadth first)."""
    frontier, seen = [offset], {offset}
    for _ in range(max_depth):
        frontier = [h for o in frontier for h in nouns.get(o, ((), ()))[1] if h not in seen and not seen.add(h)]
        for h in frontier:
            yield nouns[h][0]
