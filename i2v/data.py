"""Dataset readers for the formats users have: Flickr8k/30k token files, COCO captions json,
and a folder of images with a CSV of tags.

Every reader returns a `Dataset`: image paths, each image's texts (captions or tags), and a
list of what was skipped with the reason (file and line). Nothing is dropped silently.
"""
import csv
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

FORMATS = ("flickr8k", "flickr30k", "coco", "tags")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")


@dataclass
class Dataset:
    paths: list  # absolute image paths, one per image
    texts: list  # list of lists of str: captions (or tags) of each image
    kind: str = "captions"  # "captions" (free text, tagged by spaCy) or "tags" (words as given)
    skipped: list = field(default_factory=list)  # "file:line: reason" for everything left out
    source: str = ""

    def __len__(self):
        return len(self.paths)

    def subset(self, keep):
        keep = list(keep)
        return Dataset([self.paths[i] for i in keep], [self.texts[i] for i in keep],
                       self.kind, list(self.skipped), self.source)

    def summary(self):
        n_texts = sum(len(t) for t in self.texts)
        return {"source": self.source, "images": len(self.paths), "texts": n_texts,
                "kind": self.kind, "skipped": len(self.skipped)}


def _flickr_images_dir(root):
    for name in ("images", "Flicker8k_Dataset", "Flickr8k_Dataset", "flickr30k-images", "flickr30k_images"):
        if (root / name).is_dir():
            return root / name
    return root


def _flickr_token_file(root):
    for name in ("Flickr8k.token.txt", "results_20130124.token", "Flickr30k.token.txt"):
        if (root / name).is_file():
            return root / name
    raise FileNotFoundError(f"no Flickr token file in {root}: expected Flickr8k.token.txt "
                            "(Flickr8k) or results_20130124.token (Flickr30k)")


def read_flickr(root, *, split=None, images=None):
    """Read Flickr8k/Flickr30k captions: `<image>#<n>\\t<caption>` lines.

    Parameters
    ----------
    root : str or Path, folder with the token file (and `Flickr_8k.<split>Images.txt`).
    split : None or one of "train", "dev", "test"; None reads every captioned image.
    images : folder of the photos; default `root/images` (or the original folder names).
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"Flickr data folder not found: {root}")
    token_file = _flickr_token_file(root)
    image_dir = Path(images) if images else _flickr_images_dir(root)
    skipped, captions = [], {}
    with open(token_file, encoding="utf-8", errors="replace") as f:
        for lineno, line in enumerate(f, 1):
            line = line.rstrip("\n\r")
            if not line.strip():
                continue
            name, sep, caption = line.partition("\t")
            if not sep or "#" not in name or not caption.strip():
                skipped.append(f"{token_file}:{lineno}: malformed line (want '<image>#<n>\\t<caption>')")
                continue
            captions.setdefault(name.rsplit("#", 1)[0], []).append(caption.strip())
    names = list(captions)
    if split is not None:
        split_file = root / f"Flickr_8k.{split}Images.txt"
        if split not in ("train", "dev", "test"):
            raise ValueError(f"split={split!r}: expected 'train', 'dev' or 'test'")
        if not split_file.is_file():
            raise FileNotFoundError(f"split file not found: {split_file}")
        with open(split_file, encoding="utf-8") as f:
            wanted = [ln.strip() for ln in f if ln.strip()]
        for lineno, name in enumerate(wanted, 1):
            if name not in captions:
                skipped.append(f"{split_file}:{lineno}: {name} has no caption in {token_file.name}")
        names = [n for n in wanted if n in captions]
    paths, texts = [], []
    for name in names:
        path = image_dir / name
        if not path.is_file():
            skipped.append(f"{token_file}: image file missing: {path}")
            continue
        paths.append(str(path.resolve()))
        texts.append(captions[name])
    return Dataset(paths, texts, "captions", skipped, f"flickr:{root}" + (f":{split}" if split else ""))


def read_coco(captions_json, *, images):
    """Read a COCO captions file (`captions_train2014.json`, ...) with its image root.

    A `file_name` may hold sub-folders; it is resolved under `images`.
    """
    captions_json = Path(captions_json)
    if not captions_json.is_file():
        raise FileNotFoundError(f"COCO captions file not found: {captions_json}")
    if images is None:
        raise ValueError("COCO needs the image folder: pass images=DIR (CLI: --images DIR)")
    image_dir = Path(images)
    try:
        with open(captions_json, encoding="utf-8") as f:
            doc = json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"{captions_json}: not valid JSON ({e})") from None
    if not isinstance(doc, dict) or "images" not in doc or "annotations" not in doc:
        raise ValueError(f"{captions_json}: not a COCO captions file (needs 'images' and 'annotations')")
    skipped, files, captions = [], {}, {}
    for i, im in enumerate(doc["images"]):
        if not isinstance(im, dict) or "id" not in im or "file_name" not in im:
            skipped.append(f"{captions_json}: images[{i}]: needs 'id' and 'file_name'")
            continue
        files[im["id"]] = im["file_name"]
    for i, ann in enumerate(doc["annotations"]):
        if not isinstance(ann, dict) or not isinstance(ann.get("caption"), str):
            skipped.append(f"{captions_json}: annotations[{i}]: needs 'image_id' and a 'caption' string")
            continue
        if ann.get("image_id") not in files:
            skipped.append(f"{captions_json}: annotations[{i}]: caption for unknown image_id {ann.get('image_id')!r}")
            continue
        captions.setdefault(ann["image_id"], []).append(ann["caption"].strip())
    paths, texts = [], []
    for image_id, name in files.items():
        if image_id not in captions:
            skipped.append(f"{captions_json}: image {name} has no caption")
            continue
        path = image_dir / name
        if not path.is_file():
            skipped.append(f"{captions_json}: image file missing: {path}")
            continue
        paths.append(str(path.resolve()))
        texts.append(captions[image_id])
    return Dataset(paths, texts, "captions", skipped, f"coco:{captions_json}")


def split_tags(field_text):
    """'dog; red ball' -> ['dog', 'red ball']; 'dog beach' -> ['dog', 'beach']; lower-cased."""
    parts = field_text.split(";") if ";" in field_text else field_text.split()
    return [p.strip().lower() for p in parts if p.strip()]


def read_tags_csv(tags_csv, *, images=None):
    """Read a CSV of user tags: header `image,tags`; tags separated by ';' or spaces.

    `image` is resolved under `images` (default: the CSV's folder).
    """
    tags_csv = Path(tags_csv)
    if not tags_csv.is_file():
        raise FileNotFoundError(f"tags CSV not found: {tags_csv}")
    image_dir = Path(images) if images else tags_csv.parent
    skipped, tags = [], {}
    with open(tags_csv, encoding="utf-8", errors="replace", newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None or [h.strip().lower() for h in header[:2]] != ["image", "tags"]:
            raise ValueError(f"{tags_csv}:1: header must be 'image,tags', got {header!r}")
        for row in reader:
            lineno = reader.line_num
            if not row or not any(c.strip() for c in row):
                continue
            if len(row) < 2 or not row[0].strip():
                skipped.append(f"{tags_csv}:{lineno}: malformed row {row!r} (want image,tags)")
                continue
            words = split_tags(",".join(row[1:]))
            if not words:
                skipped.append(f"{tags_csv}:{lineno}: {row[0]} has no tags")
                continue
            tags.setdefault(row[0].strip(), []).extend(words)
    paths, texts = [], []
    for name, words in tags.items():
        path = image_dir / name
        if not path.is_file():
            skipped.append(f"{tags_csv}: image file missing: {path}")
            continue
        paths.append(str(path.resolve()))
        texts.append(list(dict.fromkeys(words)))
    return Dataset(paths, texts, "tags", skipped, f"tags:{tags_csv}")


def load_dataset(fmt, data, *, images=None, split=None):
    """Dispatch on `fmt` (one of FORMATS) to the reader for that format."""
    if fmt in ("flickr8k", "flickr30k"):
        return read_flickr(data, split=split, images=images)
    if split is not None:
        raise ValueError(f"--split is only for Flickr data; format {fmt!r} reads the whole file")
    if fmt == "coco":
        return read_coco(data, images=images)
    if fmt == "tags":
        return read_tags_csv(data, images=images)
    raise ValueError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")


def scan_images(folders):
    """Image files under `folders` (recursive), and what could not be looked at.

    Returns
    -------
    paths : sorted absolute str paths (symlinks resolved).
    errors : list of "path: reason" for entries skipped (symlink loops, broken links...).
    unreadable : list of folders that could not be listed; their files are unknown, not gone.
    """
    out, errors, unreadable = set(), [], []

    def add(p):
        try:
            out.add(str(Path(p).resolve(strict=True)))
        except (OSError, RuntimeError) as e:  # RuntimeError: symlink loop (Python < 3.13)
            errors.append(f"{p}: skipped ({getattr(e, 'strerror', None) or e})")

    for folder in folders:
        folder = Path(folder)
        if folder.is_file():
            add(folder)
            continue
        if not folder.is_dir():
            raise FileNotFoundError(f"not a folder or file: {folder}")
        for dirpath, _, names in os.walk(folder, onerror=lambda e: unreadable.append(os.path.abspath(e.filename))):
            for n in names:
                if n.lower().endswith(IMAGE_EXTENSIONS) and not n.startswith("."):
                    add(os.path.join(dirpath, n))
    return sorted(out), errors, unreadable


def list_images(folders):
    """All readable image files under `folders` (recursive), sorted; str paths, absolute."""
    return scan_images(folders)[0]
