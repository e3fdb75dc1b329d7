"""The query language, one parser for the CLI and the app.

    snow + young            dog - leash + ball        2*dog + 0.5 * grass
    two dogs running on the beach   (free text: the vocabulary words it contains)
    [photo] - snow + beach  (a photo's code plus/minus words)
"""
import difflib
import re

MAX_QUERY_CHARS = 500
PHOTO = "[photo]"
_TERM = re.compile(r"^(?:(\d+(?:\.\d*)?|\.\d+)\s*\*\s*)?([^\s*+\-]+(?:\s+[^\s*+\-]+)*)$")


class QueryError(ValueError):
    """A query that cannot be turned into a vector; the message says what to change.

    `.replacements` lists (unknown word, suggested word) pairs a front end can offer as fixes.
    """

    def __init__(self, message, replacements=()):
        super().__init__(message)
        self.replacements = list(replacements)


def parse(text):
    """Split a query into signed, weighted terms (syntax only, no vocabulary).

    Returns
    -------
    terms : list of (str, float): ("dog", 1.0), ("leash", -1.0), ("[photo]", 1.0), ...
    free_text : bool, True when the query has no operator (the words are read as text).
    """
    if not isinstance(text, str):
        raise QueryError("the query must be text")
    text = text.strip()
    if not text.isprintable() and any(0xD800 <= ord(c) <= 0xDFFF or c in "\x00" for c in text):
        raise QueryError("the query has characters that are not text")
    if not text:
        raise QueryError("empty query: type words such as 'dog + grass' or 'snow + young'")
    if len(text) > MAX_QUERY_CHARS:
        raise QueryError(f"query too long ({len(text)} characters; at most {MAX_QUERY_CHARS})")
    if not re.search(r"[+\-*]", text.replace(PHOTO, "")):
        words = text.split()
        return [(w, 1.0) for w in words], len(words) > 1 or not words[0].startswith("[")
    terms, sign, expect_term = [], 1.0, True
    for tok in re.split(r"\s*([+\-])\s*", text):
        if tok in ("+", "-"):
            if not expect_term and terms:
                expect_term = True
                sign = 1.0 if tok == "+" else -1.0
            elif expect_term:  # "- dog" at the start or "+ -": fold the signs
                sign *= 1.0 if tok == "+" else -1.0
            continue
        if not tok:
            continue
        if not expect_term:
            raise QueryError(f"missing '+' or '-' before {tok!r}")
        m = _TERM.match(tok)
        if not m:
            raise QueryError(f"cannot read {tok!r}: write terms like 'dog', '2*dog' or '0.5 * grass'")
        weight = float(m.group(1)) if m.group(1) else 1.0
        terms.append((m.group(2).lower() if m.group(2) != PHOTO else PHOTO, sign * weight))
        sign, expect_term = 1.0, False
    if not terms:
        raise QueryError("the query has no words: type words such as 'dog + grass'")
    if expect_term:
        raise QueryError("the query ends with an operator: add a word after the last '+' or '-'")
    return terms, False


def suggest(word, vocab, k=5):
    """Closest vocabulary words: spelling first, then GloVe neighbours that are in the vocabulary."""
    out = difflib.get_close_matches(word, vocab.words, n=k, cutoff=0.6)
    try:
        from .wordvec import load_glove

        kv = load_glove()
        if word in kv.key_to_index:
            for w, _ in kv.most_similar(word, topn=200):
                if w in vocab and w not in out:
                    out.append(w)
                if len(out) >= 2 * k:
                    break
    except Exception:  # suggestions are a courtesy; never fail a query on them
        pass
    return out[: 2 * k]


def resolve(text, vocab, *, allow_photo=False, known=None):
    """Parse `text` and map its words onto the vocabulary.

    known : optional callable word -> bool for words outside `vocab` the model can still place
    (open-world models: common words GloVe knows); used for terms and one-word queries.

    Returns
    -------
    terms : list of (word, weight) with every word in `vocab` or accepted by `known`.
    photo_weight : float, weight of the photo term (0.0 when the query has none).
    """
    terms, free = parse(text)
    photo_weight = sum(w for t, w in terms if t == PHOTO)
    terms = [(t, w) for t, w in terms if t != PHOTO]
    if photo_weight and not allow_photo:
        raise QueryError(f"the query uses {PHOTO} but no photo was given")
    if free:
        tokens = re.findall(r"[a-z]+", " ".join(t for t, _ in terms).lower())
        found = [w for w in (vocab.lemma(t) for t in tokens) if w]
        found = list(dict.fromkeys(found))
        if not found and len(tokens) == 1 and known and known(tokens[0]):
            found = tokens
        if not found:
            unknown = ", ".join(repr(t) for t, _ in terms[:5])
            pairs = [(t, s) for t, _ in terms[:3] for s in suggest(t.lower(), vocab, 3)]
            hints = list(dict.fromkeys(s for _, s in pairs))
            raise QueryError(f"no known word in {unknown}" + (f"; try: {', '.join(hints)}" if hints else
                                                             "; try everyday words such as dog, beach, snow, red"),
                             pairs)
        return [(w, 1.0) for w in found], photo_weight
    out = []
    for word, weight in terms:
        cand = vocab.lemma(word) if " " not in word and word.isprintable() else None
        if cand is None and known and word.isalpha() and known(word):
            cand = word
        if cand is None:
            hints = suggest(word, vocab)
            raise QueryError(f"unknown word {word!r}" + (f"; closest known words: {', '.join(hints)}" if hints else ""),
                             [(word, h) for h in hints])
        out.append((cand, weight))
    if not out and not photo_weight:
        raise QueryError("the query has no words: type words such as 'dog + grass'")
    return out, photo_weight
