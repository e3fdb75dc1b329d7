import numpy as np
import pytest

from i2v.data import Dataset
from i2v.text import build_vocab, caption_words, count_words, image_words, word_matrix


def test_nouns_and_adjectives_of_the_example():
    assert caption_words(["a black dog laying on his big dog bed"]) == [["black", "dog", "big", "dog", "bed"]]


def test_lemmas_lower_case_alphabetic():
    words = caption_words(["Two DOGS are running in the snow 2 times ."])[0]
    assert "dog" in words and "snow" in words and "2" not in words and all(w.islower() for w in words)


def test_vocabulary_counts_images_not_captions():
    ds = Dataset(["a", "b", "c"], [["a dog on grass", "a brown dog"], ["a dog"], ["a cat"]])
    per = image_words(ds)
    assert dict(per[0])["dog"] == 2 and dict(per[0])["grass"] == 1
    v = build_vocab(per, min_count=2)
    assert v.words == ["dog"] and v.counts == [2]  # images, not captions
    v1 = build_vocab(per, min_count=1)
    assert v1.words[0] == "dog" and set(v1.words) == {"dog", "grass", "brown", "cat"}
    X = word_matrix(per, v1)
    assert X.shape == (3, 4) and X[0, v1.index["dog"]] == 1 and X[2, v1.index["dog"]] == 0
    Xf = word_matrix(per, v1, weighting="fraction", n_texts=[2, 1, 1])
    assert Xf[0, v1.index["grass"]] == 0.5
    with pytest.raises(ValueError, match="empty vocabulary"):
        build_vocab(per, min_count=10)
    with pytest.raises(ValueError, match="min_count=0"):
        build_vocab(per, min_count=0)


def test_tags_are_taken_as_given():
    ds = Dataset(["a"], [["london", "gbr", "crane"]], kind="tags")
    assert image_words(ds) == [[("crane", 1), ("gbr", 1), ("london", 1)]]
    assert count_words([["a", "b"], ["a"]]) == [("a", 2), ("b", 1)]


def test_word_vectors_most_similar_matches_brute_force():
    import numpy as np

    from i2v.wordvec import WordVectors

    rng = np.random.default_rng(0)
    V = rng.normal(size=(50, 8)).astype(np.float32)
    V[7] = 0  # a zero row (GloVe has a few): cosine 0, never a crash
    kv = WordVectors([f"w{i}" for i in range(50)], V)
    for j in (0, 7, 49):
        got = kv.most_similar(f"w{j}", topn=5)
        unit = V / np.maximum(np.linalg.norm(V, axis=1, keepdims=True), 1e-12)
        sims = unit @ unit[j]
        ref = [i for i in np.argsort(-sims, kind="stable") if i != j][:5]
        assert [w for w, _ in got] == [f"w{i}" for i in ref]
        np.testing.assert_allclose([s for _, s in got], sims[ref], atol=2e-3)  # unit vectors kept in float16
    assert "w3" in kv and "zz" not in kv and kv["w3"].shape == (8,)
