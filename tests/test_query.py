import pytest
from hypothesis import given, settings, strategies as st

from i2v.query import MAX_QUERY_CHARS, QueryError, parse, resolve
from i2v.text import Vocab

VOCAB = Vocab(["dog", "grass", "snow", "young", "leash", "ball", "beach", "child", "red", "bike"], [1] * 10)


@pytest.mark.parametrize("text,terms", [
    ("snow + young", [("snow", 1.0), ("young", 1.0)]),
    ("dog - leash + ball", [("dog", 1.0), ("leash", -1.0), ("ball", 1.0)]),
    ("2*dog", [("dog", 2.0)]),
    ("0.5 * grass + dog", [("grass", 0.5), ("dog", 1.0)]),
    ("-snow+dog", [("snow", -1.0), ("dog", 1.0)]),
    ("dog", [("dog", 1.0)]),
    ("Dog + GRASS", [("dog", 1.0), ("grass", 1.0)]),
])
def test_expressions(text, terms):
    assert resolve(text, VOCAB)[0] == terms


def test_free_text_keeps_vocabulary_lemmas():
    assert resolve("two dogs running on the beach", VOCAB) == ([("dog", 1.0), ("beach", 1.0)], 0.0)


def test_plural_term_is_lemmatized():
    assert resolve("dogs + snow", VOCAB)[0] == [("dog", 1.0), ("snow", 1.0)]


def test_photo_terms():
    assert resolve("[photo] - snow + beach", VOCAB, allow_photo=True) == ([("snow", -1.0), ("beach", 1.0)], 1.0)
    with pytest.raises(QueryError, match="no photo was given"):
        resolve("[photo] + dog", VOCAB)


@pytest.mark.parametrize("text,msg", [
    ("", "empty query"), ("   ", "empty query"), ("+", "no words"), ("+ + -", "no words"),
    ("dog +", "ends with an operator"), ("dog + * 2", "cannot read"), ("x" * 10_000, "too long"),
    ("dgo + grass", "unknown word 'dgo'.*dog"), ("the of and", "no known word"), ("🐶 + 🌊", "unknown word"),
    ("<script>alert(1)</script>", "no known word"), ("'; DROP TABLE photos; --", "no known word|unknown word|cannot read|ends with"),
])
def test_errors_are_clear(text, msg):
    with pytest.raises(QueryError, match=msg):
        resolve(text, VOCAB)


def test_parse_is_syntax_only():
    assert parse("zebra + 3*unicorn") == ([("zebra", 1.0), ("unicorn", 3.0)], False)
    assert parse("a red bike")[1] is True
    assert len("x" * MAX_QUERY_CHARS) == MAX_QUERY_CHARS


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80))
def test_parser_only_raises_query_error(text):
    try:
        terms, free = parse(text)
    except QueryError:
        return
    assert terms and all(isinstance(w, float) for _, w in terms)


@settings(max_examples=150, deadline=None)
@given(st.text(alphabet="dog snw+-*.2 [photo]", max_size=30))
def test_resolve_only_raises_query_error(text):
    try:
        terms, photo = resolve(text, VOCAB, allow_photo=True)
    except QueryError:
        return
    assert all(w in VOCAB for w, _ in terms)
