import json

import pytest

from i2v.data import list_images, load_dataset, read_coco, read_flickr, read_tags_csv, split_tags

from conftest import need_flickr


def write_flickr(root, names, extra_lines=()):
    lines = [f"{n}#{j}\tA dog runs on the grass number {j} ." for n in names for j in range(5)]
    (root / "Flickr8k.token.txt").write_text("\n".join(lines + list(extra_lines)) + "\n")
    (root / "Flickr_8k.trainImages.txt").write_text("\n".join(names[:4]) + "\n")
    (root / "Flickr_8k.testImages.txt").write_text("\n".join(names[4:]) + "\nghost.jpg\n")


def test_flickr_token_file_and_splits(tiny_images):
    d, names = tiny_images
    root = d.parent
    (root / "images").symlink_to(d)
    write_flickr(root, names)
    ds = read_flickr(root)
    assert len(ds) == 6 and all(len(t) == 5 for t in ds.texts) and not ds.skipped
    train = read_flickr(root, split="train")
    assert [p.split("/")[-1] for p in train.paths] == names[:4]
    test = read_flickr(root, split="test")
    assert len(test) == 2
    assert any("ghost.jpg has no caption" in s and "Flickr_8k.testImages.txt:3" in s for s in test.skipped)


def test_flickr_broken_lines_and_missing_images(tiny_images):
    d, names = tiny_images
    root = d.parent
    (root / "images").symlink_to(d)
    write_flickr(root, names, ["no tab here", "x.jpg#0\t", "missing.jpg#0\tA cat ."])
    ds = read_flickr(root)
    assert len(ds) == 6
    msgs = "\n".join(ds.skipped)
    assert "Flickr8k.token.txt:31: malformed" in msgs and "Flickr8k.token.txt:32: malformed" in msgs
    assert "image file missing" in msgs and "missing.jpg" in msgs
    assert len(ds.skipped) == 3
    with pytest.raises(ValueError, match="split='val'"):
        read_flickr(root, split="val")


def test_coco_with_subfolders_and_errors(tiny_images):
    d, names = tiny_images
    sub = d / "train2014"
    sub.mkdir()
    (d / names[0]).rename(sub / names[0])
    doc = {"images": [{"id": 1, "file_name": f"train2014/{names[0]}"}, {"id": 2, "file_name": names[1]},
                      {"id": 3, "file_name": "nope.jpg"}, {"id": 4, "file_name": names[2]}, {"file_name": "x"}],
           "annotations": [{"image_id": 1, "caption": "A red bus."}, {"image_id": 1, "caption": "A bus."},
                           {"image_id": 2, "caption": "Two dogs."}, {"image_id": 3, "caption": "Gone."},
                           {"image_id": 99, "caption": "Orphan."}, {"image_id": 2}]}
    cap = d / "captions_train2014.json"
    cap.write_text(json.dumps(doc))
    ds = read_coco(cap, images=d)
    assert len(ds) == 2 and ds.texts[0] == ["A red bus.", "A bus."]
    msgs = "\n".join(ds.skipped)
    assert "unknown image_id 99" in msgs and "image file missing" in msgs and "has no caption" in msgs
    assert "images[4]" in msgs and "annotations[5]" in msgs
    (d / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="bad.json: not valid JSON"):
        read_coco(d / "bad.json", images=d)
    (d / "other.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="not a COCO captions file"):
        read_coco(d / "other.json", images=d)


def test_tags_csv(tiny_images):
    d, names = tiny_images
    csv = d / "tags.csv"
    csv.write_text("image,tags\n"
                   f"{names[0]},concrete;gbr;london\n"
                   f"{names[1]},dog beach Dog\n"
                   f"{names[2]},\n"
                   "nofile.jpg,cat\n"
                   "\n"
                   f"{names[3]},\"red bus; street\"\n")
    ds = read_tags_csv(csv)
    assert ds.kind == "tags" and len(ds) == 3
    assert ds.texts[0] == ["concrete", "gbr", "london"] and ds.texts[1] == ["dog", "beach"]
    assert ds.texts[2] == ["red bus", "street"]
    msgs = "\n".join(ds.skipped)
    assert "tags.csv:4:" in msgs and "has no tags" in msgs and "nofile.jpg" in msgs
    (d / "bad.csv").write_text("file,words\na.jpg,x\n")
    with pytest.raises(ValueError, match="header must be 'image,tags'"):
        read_tags_csv(d / "bad.csv")


def test_split_tags_and_dispatch(tiny_images):
    assert split_tags("a; b c ;") == ["a", "b c"] and split_tags("A  B") == ["a", "b"]
    with pytest.raises(ValueError, match="unknown format 'yolo'"):
        load_dataset("yolo", "x")
    d, names = tiny_images
    (d / "notes.txt").write_text("x")
    (d / ".hidden.jpg").write_text("x")
    assert [p.split("/")[-1] for p in list_images([d])] == sorted(names)


def test_real_flickr8k_split():
    root = need_flickr()
    for split, n in (("train", 6000), ("dev", 1000), ("test", 1000)):
        ds = read_flickr(root, split=split)
        assert len(ds) == n and not ds.skipped
        assert sum(len(t) for t in ds.texts) == 5 * n
