"""Open-world words: the numeric pieces against naive references, the class-word table on a tiny
WordNet, and the whole `extend` workflow on a tiny Flickr folder."""
import json

import numpy as np
import pytest

from i2v.openvocab import (build_class_words, class_word_targets, fit_word_map, load_class_words, mapped_columns,
                           regress_columns)


def test_regress_columns_finds_a_planted_direction():
    rng = np.random.default_rng(0)
    C = rng.normal(size=(500, 8))
    w = rng.normal(size=(8, 2))
    cols = regress_columns(C, C @ w + 0.01 * rng.normal(size=(500, 2)), ridge=1e-6)
    np.testing.assert_allclose(np.linalg.norm(cols, axis=0), 1.0, rtol=1e-5)
    ref = np.linalg.lstsq(C - C.mean(0), (C @ w) - (C @ w).mean(0), rcond=None)[0]  # naive least squares
    np.testing.assert_allclose(cols, ref / np.linalg.norm(ref, axis=0), atol=1e-3)


def test_word_map_recovers_a_planted_linear_map():
    rng = np.random.default_rng(1)
    M = rng.normal(size=(6, 4))
    G = rng.normal(size=(200, 4))
    D = (G @ M.T).T
    got = fit_word_map(G, D, ridge=1e-8)
    np.testing.assert_allclose(got, M, atol=1e-4)
    cols = mapped_columns(got, G[:3])
    np.testing.assert_allclose(cols, D[:, :3] / np.linalg.norm(D[:, :3], axis=0), atol=1e-4)


def test_class_word_targets_are_log_probabilities_of_the_word_classes():
    logits = np.log(np.array([[0.7, 0.2, 0.1] + [1e-9] * 997]))
    classes = {0: ["dog", "retriever"], 1: ["dog"], 2: ["cat"]}
    t = class_word_targets(logits, classes, ["dog", "retriever", "cat"])
    np.testing.assert_allclose(np.exp(t) - 1e-4, [[0.9, 0.7, 0.1]], atol=1e-6)


def test_build_class_words_on_a_tiny_wordnet(tmp_path):
    # beagle -> hound -> dog -> animal; "golden" is an adjective and never a class word
    (tmp_path / "data.noun").write_text(
        "  license header line\n"
        "00000001 05 n 01 animal 0 000 | a living thing\n"
        "00000002 05 n 01 dog 0 001 @ 00000001 n 0000 | a dog\n"
        "00000003 05 n 01 hound 0 001 @ 00000002 n 0000 | a hound\n"
        "00000004 05 n 02 beagle 0 golden_beagle 0 001 @ 00000003 n 0000 | a beagle\n")
    (tmp_path / "index.adj").write_text("  license\ngolden a 1 0 1 0 00000009\n")
    labels = tmp_path / "labels.tsv"
    labels.write_text("file\twnid\tclass_index\tclean_name\tsynonyms\nb.jpg\tn00000004\t0\tgolden beagle\tbeagle\n")
    rows = build_class_words(labels, {"beagle", "dog", "animal", "golden"}, tmp_path)
    assert rows == [(0, "n00000004", "golden beagle", ["beagle", "dog"])]  # head noun, nearest caption hypernym


def test_shipped_class_words_table():
    cw = load_class_words()
    assert len(cw) == 1000 and all(cw.values())
    assert {"pizza"} <= set(cw[963]) and "dog" in cw[207] and "zebra" in cw[340]


@pytest.fixture
def coco_text(tmp_path):
    coco = tmp_path / "captions.json"
    caps = ["a pizza on a plate", "a giraffe near a tree", "a plate with pizza", "pizza and a plate"]
    coco.write_text(json.dumps({"images": [], "annotations": [{"image_id": i % 2, "caption": c}
                                                              for i, c in enumerate(caps)]}))
    return coco


def test_extend_writes_an_open_world_model(tiny_flickr, coco_text, tmp_path, capsys):
    from i2v.cli import main
    from i2v.pipeline import load_model, query_vector

    data, coco = tiny_flickr, coco_text
    assert main(["train", "--model", "simple", "--data", str(data), "--format", "flickr8k", "--out",
                 str(tmp_path / "simple"), "--min-count", "1", "--dim", "8"]) == 0
    assert main(["extend", "--model", str(tmp_path / "simple"), "--coco", str(coco), "--out", str(tmp_path / "ow"),
                 "--min-images", "1"]) == 0
    summary = json.loads(capsys.readouterr().out)
    n_caption_words = len(load_model(str(tmp_path / "simple")).vocab)
    assert summary["words"]["captions"] == n_caption_words and set(summary["source_weights"]) == {"imagenet",
                                                                                                 "word-vectors"}
    m = load_model(str(tmp_path / "ow"))
    assert len(m.vocab) == m.D.shape[1] and m.vocab.source("square") == "captions"
    if summary["source_weights"]["imagenet"] > 0:
        assert m.vocab.source("pizza") == "imagenet"  # a class word (ImageNet has "pizza")
    np.testing.assert_allclose(np.linalg.norm(m.D, axis=0), 1.0, rtol=1e-4)
    # any common word GloVe knows is searchable; a typo is not
    q, terms, _ = query_vector(m, "giraffe + square")
    assert [t for t, _ in terms] == ["giraffe", "square"] and np.isfinite(q).all()
    from i2v.pipeline import UserError

    with pytest.raises(UserError, match="unknown word 'sqaure'"):
        query_vector(m, "dog + sqaure")


def test_name_objects_counts_class_words(tmp_path, monkeypatch, tiny_images):
    from i2v.pipeline import load_model, name_objects

    monkeypatch.setenv("I2V_CACHE", str(tmp_path / "cache"))
    d, names = tiny_images
    folder = tmp_path / "objects"
    folder.mkdir()
    (folder / "images").symlink_to(d)
    (folder / "labels.tsv").write_text("file\twnid\tclass_index\tclean_name\tsynonyms\n" +
                                       "".join(f"{n}\tn0\t{i}\tx\tx\n" for i, n in enumerate(names)))
    model = load_model()
    rep = name_objects({"m": model}, folder)
    codes = model.encode(*__import__("i2v.features", fromlist=["extract"]).extract(
        [str(d / n) for n in names], progress=False)[:2])
    summaries, _ = model.summarize_codes(codes, 3)
    cw = load_class_words()
    naive = np.mean([bool({w for w, _ in s} & set(cw[i])) for i, s in enumerate(summaries)])
    assert rep["photos"] == 6 and rep["m"]["acc@3"] == pytest.approx(naive)
