import json

import numpy as np
import pytest

from i2v.cli import build_parser, main

from conftest import need_flickr, sample_photos


@pytest.mark.parametrize("command", ["features", "train", "eval", "extend", "summarize", "index", "compress", "search",
                                     "neighbours"])
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as e:
        main([command, "--help"])
    assert e.value.code == 0
    assert "usage:" in capsys.readouterr().out


def test_summarize_json_and_a_bad_photo(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("I2V_CACHE", str(tmp_path / "cache"))
    bad = tmp_path / "bad.jpg"
    bad.write_text("<html>not a photo</html>")
    china, flower = map(str, sample_photos())
    rc = main(["summarize", china, str(bad), flower, "--json", "-k", "3"])
    out, err = capsys.readouterr()
    assert rc == 1
    assert "bad.jpg" in err and err.count("\n") == 1  # one line naming the file
    res = json.loads(out)
    assert [r["image"] for r in res] == [china, flower]
    for r in res:
        assert 1 <= len(r["words"]) <= 3 and all(w["weight"] > 0 for w in r["words"])
    flower_words = {w["word"] for w in res[1]["words"]}
    assert flower_words & {"flower", "pink", "purple", "yellow", "plant", "orange", "red", "green", "colorful"}


def test_a_photo_named_like_an_option(tmp_path, capsys, monkeypatch):
    """`summarize -rf.jpg`: argparse reads it as options; the CLI says to put it after `--`, which works."""
    import shutil

    monkeypatch.setenv("I2V_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    shutil.copy(sample_photos()[0], tmp_path / "-rf.jpg")
    with pytest.raises(SystemExit):
        main(["summarize", "-rf.jpg"])
    assert "goes after `--` (python -m i2v summarize -- -rf.jpg)" in capsys.readouterr().err
    assert main(["summarize", "--", "-rf.jpg"]) == 0
    assert capsys.readouterr().out.startswith("-rf.jpg: ")


def test_index_search_neighbours(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("I2V_CACHE", str(tmp_path / "cache"))
    from conftest import REPO

    photos = REPO / "demo" / "gallery"
    assert main(["index", str(photos), "--out", str(tmp_path / "ix")]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["photos"] >= 40 and summary["skipped"] == 0
    assert main(["search", "dog + grass", "--index", str(tmp_path / "ix"), "-k", "5", "--json"]) == 0
    hits = json.loads(capsys.readouterr().out)
    assert len(hits) == 5 and [h["distance"] for h in hits] == sorted(h["distance"] for h in hits)
    assert sum(("blackie" in h["path"] or "spiff" in h["path"] or "chelsea" in h["path"]) for h in hits[:3]) >= 1
    assert main(["search", "dgo + grass", "--index", str(tmp_path / "ix")]) == 2
    assert "unknown word 'dgo'" in capsys.readouterr().err
    # re-run: nothing to add
    assert main(["index", str(photos), "--out", str(tmp_path / "ix")]) == 0
    assert json.loads(capsys.readouterr().out)["added"] == 0
    assert main(["neighbours", "yellow", "-k", "5", "--json"]) == 0
    nb = json.loads(capsys.readouterr().out)
    assert len(nb["visual"]) == 5 and len(nb["text"]) == 5 and nb["text"][0][0] == "red"


def test_neighbours_prompt(monkeypatch, capsys):
    answers = iter(["yellow", "qwxzv", "break"])
    monkeypatch.setattr("builtins.input", lambda prompt="": (print(prompt, end=""), next(answers))[1])
    assert main(["neighbours", "-k", "3"]) == 0
    out = capsys.readouterr().out
    assert out.count("Enter word (break, an empty line or Ctrl-D to quit):") == 3
    assert "visual neighbours of 'yellow'" in out and "GloVe" in out and "error: 'qwxzv'" in out


def test_train_and_eval_on_a_tiny_flickr_folder(tmp_path, capsys, tiny_flickr):
    folder = tiny_flickr
    assert main(["features", "--data", str(folder), "--format", "flickr8k"]) == 0
    assert json.loads(capsys.readouterr().out)["extracted"] == 6
    for kind in ("simple", "learn-all"):
        rc = main(["train", "--model", kind, "--data", str(folder), "--format", "flickr8k",
                   "--out", str(tmp_path / kind), "--min-count", "1", "--dim", "8", "--epochs", "2"])
        assert rc == 0
        cfg = json.loads((tmp_path / kind / "config.json").read_text())
        assert cfg["train_data"]["split"] == "train" and cfg["train_data"]["images"] == 6
        assert set(cfg["vocab"]["words"]) >= {"square", "wall", "white"}
    out = tmp_path / "report.json"
    rc = main(["eval", "--data", str(folder), "--format", "flickr8k", "--split", "test",
               "--models", f"{tmp_path / 'simple'},{tmp_path / 'learn-all'}", "--json", str(out)])
    assert rc == 0
    rep = json.loads(out.read_text())
    rows = rep["models"]
    assert {"ref:frequency-prior", "ref:knn-20", "ref:linear-ridge"} <= set(rows)
    for m in rows.values():
        assert 0 <= m["p@3"] <= 1 and 0 <= m["t2i_r@1"] <= m["t2i_r@10"] <= 1


def test_missing_data_is_a_clear_error(capsys, tmp_path):
    assert main(["features", "--data", str(tmp_path / "nope"), "--format", "flickr8k"]) == 2
    assert "not found" in capsys.readouterr().err


def test_summarize_real_flickr_photos():
    """End to end on real photos: the default model's 3 words are mostly in the captions."""
    from i2v import checkpoint
    from i2v.data import read_flickr
    from i2v.evaluate import precision_recall_at_k, truth_sets
    from i2v.features import get_backbone
    from i2v.text import caption_words

    root = need_flickr()
    ds = read_flickr(root, split="test").subset(range(24))
    model = checkpoint.load()
    feats, logits = get_backbone().encode_images(ds.paths)
    summaries, fit = model.summarize_codes(model.encode(feats, logits), 3)
    caps = [caption_words(t) for t in ds.texts]
    p, _ = precision_recall_at_k([[w for w, _ in s] for s in summaries], truth_sets(caps, model.vocab), 3)
    assert p > 0.45 and (fit > 0).all()


def test_weak_tag_on_a_tags_csv_and_eval_on_coco(tmp_path, capsys, monkeypatch, tiny_images):
    monkeypatch.setenv("I2V_CACHE", str(tmp_path / "cache"))
    d, names = tiny_images
    tags = ["red;square;gbr", "blue square london", "green;square", "red;square", "blue;square;gbr", "green square"]
    (d / "tags.csv").write_text("image,tags\n" + "\n".join(f"{n},{t}" for n, t in zip(names, tags)) + "\n")
    rc = main(["train", "--model", "weak-tag", "--data", str(d / "tags.csv"), "--format", "tags",
               "--out", str(tmp_path / "wt"), "--min-count", "1", "--dim", "8", "--epochs", "2"])
    assert rc == 0
    cfg = json.loads((tmp_path / "wt" / "config.json").read_text())
    assert cfg["kind"] == "weak-tag" and "gbr" in cfg["vocab"]["words"] and "weak_tags" not in cfg["train_data"]
    with np.load(tmp_path / "wt" / "arrays.npz", allow_pickle=False) as z:
        assert z["word_weights"].shape == (len(cfg["vocab"]["words"]),)
    capsys.readouterr()
    doc = {"images": [{"id": i, "file_name": n} for i, n in enumerate(names)],
           "annotations": [{"image_id": i, "caption": f"a {t.split(';')[0].split()[0]} square"} for i, t in enumerate(tags)]}
    (d / "captions_val.json").write_text(json.dumps(doc))
    rc = main(["eval", "--format", "coco", "--data", str(d / "captions_val.json"), "--images", str(d),
               "--models", str(tmp_path / "wt"), "--json", str(tmp_path / "coco.json")])
    assert rc == 0
    rep = json.loads((tmp_path / "coco.json").read_text())
    assert rep["test_data"]["images"] == 6 and "most_down_weighted" in rep["models"][str(tmp_path / "wt")]
    assert "ref:linear-ridge" in rep["models"]  # references trained on the tags CSV recorded in the checkpoint
