"""The workflows, written once under every front end (CLI, app, benchmarks).

    prepare   dataset -> features (cached) + caption words (cached)
    train     dataset -> checkpoint of any model kind
    evaluate  models + dataset -> the report table (models, references, object naming)
    extend    model -> open-world model (ImageNet class words, everyday words; i2v.openvocab)
    encode    photo(s) -> code(s), through the backbone the model records
    query     text (+ photo) -> query vector, one parser and one validation
    index     folders -> an index kept in sync by one staleness rule (local or Ray engine)
    compress  index -> a compressed index for large collections (i2v.compressed)
    search / summarize / neighbours over a loaded model and index

Front ends parse, print and wire; every user mistake here raises `UserError` (a ValueError)
with a one-line message they can show as it is.
"""
import contextlib
import hashlib
import json
import math
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import checkpoint
from .atomic import write_bytes
from .features import ImageError, backbone_config, default_cache_dir, extract, get_backbone
from .index import GalleryIndex, stat_files
from .query import PHOTO, QueryError, resolve

# the ranges of k for every front end
K_RANGES = {"summarize": (1, 8), "search": (1, 100), "neighbours": (1, 100)}


class UserError(ValueError):
    """A message for the person using the tool (bad photo, unknown word, empty query, bad k...).

    `.fixes`: queries the person may have meant (unknown words replaced by suggestions)."""

    def __init__(self, message, fixes=()):
        super().__init__(message)
        self.fixes = list(fixes)


def check_k(k, action):
    """`k` as an int within the range of `action` (see K_RANGES), or a UserError naming it."""
    lo, hi = K_RANGES[action]
    try:
        v = float(k)
        if not math.isfinite(v) or v != int(v):
            raise ValueError
        v = int(v)
    except (TypeError, ValueError, OverflowError):
        raise UserError(f"k must be a whole number, got {k!r}") from None
    if not lo <= v <= hi:
        raise UserError(f"k must be between {lo} and {hi}, got {v}")
    return v


def load_model(name=None):
    """A checkpoint by name or folder (None: $I2V_MODEL, else the default); UserError if unknown."""
    try:
        return checkpoint.load(name)
    except KeyError as e:
        raise UserError(e.args[0]) from None


# -- datasets -------------------------------------------------------------------------------
@dataclass
class Prepared:
    """The readable images of a dataset: features (n, F), logits (n, 1000), per-caption words."""
    features: np.ndarray
    logits: np.ndarray
    captions: list
    ok: list  # indices into the dataset
    errors: list  # "path: reason" of the unreadable images
    forms: dict  # inflected token -> Counter of its lemmas, over all captions


def tagged_words(dataset, cache_dir=None):
    """`text.caption_word_lists` of a dataset and the inflected forms seen (token -> Counter of
    lemmas), cached on disk by the hash of its texts."""
    from collections import Counter

    from .text import caption_word_lists

    h = hashlib.sha1(json.dumps([dataset.kind, dataset.texts]).encode()).hexdigest()[:20]
    path = Path(cache_dir or default_cache_dir()) / "words" / f"{h}-forms.json"
    if path.is_file():
        d = json.loads(path.read_text())
        return d["words"], {t: Counter(c) for t, c in d["forms"].items()}
    forms = {}
    words = caption_word_lists(dataset, forms=forms)
    write_bytes(path, json.dumps({"words": words, "forms": forms}))
    return words, forms


def prepare(dataset, *, cache_dir=None, backbone=None, progress=True):
    """Features (cached) and caption words (cached) of the readable images of `dataset`."""
    kw = {"backbone": backbone} if backbone else {}
    feats, logits, ok, errors = extract(dataset.paths, cache_dir=cache_dir, progress=progress, **kw)
    words, forms = tagged_words(dataset, cache_dir)
    return Prepared(feats, logits, [words[i] for i in ok], ok, errors, forms)


def recorded_training_data(model, override=None):
    """The training data path a checkpoint records (`override` first, then as given, then absolute)
    that exists here, or None."""
    rec = model.config.get("train_data", {})
    for path in (override or rec.get("data"), rec.get("data_abs")):
        if path and Path(path).exists():
            return path
    return None


def load_training_data(fmt, data, *, images=None, split=None):
    """The dataset to train on; Flickr folders default to their train split (never dev/test by accident)."""
    from .data import load_dataset

    if split is None and fmt in ("flickr8k", "flickr30k") and (Path(data) / "Flickr_8k.trainImages.txt").is_file():
        split = "train"
    return load_dataset(fmt, data, images=images, split=split), split


# -- train ----------------------------------------------------------------------------------
def train(kind, fmt, data, *, out, images=None, split=None, cache_dir=None, min_count=5, dim=256, epochs=None,
          seed=0, omp_ridge=None, drop=0.2, wrong=0.1, command=None, log=print):
    """Train a model of `kind` on a dataset and write its checkpoint to `out`.

    weak-tag on captions trains on simulated user tags (one random caption's words, a fraction
    `drop` dropped, about `wrong` x as many wrong ones); on a tags CSV it uses the tags as given.
    Returns (model, dataset, prepared).
    """
    from .text import build_vocab, count_words
    from .train import fit, weak_tags

    t0 = time.time()
    ds, split = load_training_data(fmt, data, images=images, split=split)
    prep = prepare(ds, cache_dir=cache_dir)
    vocab = build_vocab([count_words(c) for c in prep.captions], min_count=min_count, forms=prep.forms)
    log(f"{len(prep.ok)} images, vocabulary of {len(vocab)} words (min count {min_count})")
    record = {"format": fmt, "data": str(data), "data_abs": str(Path(data).resolve()), "image_dir": images,
              "image_dir_abs": str(Path(images).resolve()) if images else None, "split": split,
              **ds.summary(), "used": len(prep.ok), "vocab_size": len(vocab)}
    captions = prep.captions
    if kind == "weak-tag" and ds.kind != "tags":
        tags = weak_tags(captions, vocab, drop=drop, wrong=wrong, seed=seed)
        captions = [[[w for w, _ in t]] for t in tags]
        record["weak_tags"] = {"from": "one random caption per image", "drop": drop, "wrong": wrong}
    kw = {} if omp_ridge is None else {"omp_ridge": omp_ridge}
    model = fit(kind, prep.features, captions, vocab, dim=dim, seed=seed, epochs=epochs, log=log, **kw)
    model.config.update(backbone_config(), train_data=record, train_seconds=round(time.time() - t0, 1))
    if command:
        model.config["command"] = command
    checkpoint.save(model, out)
    return model, ds, prep


# -- evaluate -------------------------------------------------------------------------------
def evaluate(model_names, fmt, data, *, images=None, split=None, train_data=None, cache_dir=None, objects=None,
             log=print):
    """Score models (and the references, fit on the first model's training data) on a dataset.

    objects : optional folder with labels.tsv + images/ (one photo per ImageNet class): adds the
    object-naming table (`name_objects`).
    Returns the report: {"test_data": ..., "models": {name: metrics}, "references_trained_on": ...,
    "objects": ...}.
    """
    from .data import load_dataset
    from .evaluate import references, score_model
    from .text import count_words, word_matrix

    names = list(model_names or checkpoint.list_checkpoints())
    if not names:
        raise UserError("no trained models: run `python -m i2v train` first")
    models = {n: load_model(n) for n in names}
    ds = load_dataset(fmt, data, images=images, split=split)
    prep = prepare(ds, cache_dir=cache_dir)
    report = {"test_data": dict(ds.summary(), split=split, used=len(prep.ok)), "models": {}}
    for name, model in models.items():
        log(f"scoring {name}")
        row = score_model(model, model.encode(prep.features, prep.logits), prep.captions)
        down = model.most_down_weighted(20)
        if down:
            row["most_down_weighted"] = [[w, round(x, 3)] for w, x in down]
        report["models"][name] = row
    first = next(iter(models.values()))
    rec = first.config.get("train_data", {})
    train_path = recorded_training_data(first, train_data)
    if train_path:
        tr = load_dataset(rec.get("format", "flickr8k"), train_path, images=rec.get("image_dir"), split=rec.get("split"))
        ptr = prepare(tr, cache_dir=cache_dir)
        Xt = word_matrix([count_words(c) for c in ptr.captions], first.vocab)
        report["models"].update(references(ptr.features, Xt, prep.features, first.vocab, prep.captions))
        report["references_trained_on"] = dict(tr.summary(), split=rec.get("split"))
    else:
        log(f"training data {train_data or rec.get('data')!r} not found: references left out (use --train-data)")
    if objects:
        report["objects"] = name_objects(models, objects, cache_dir=cache_dir)
    return report


def name_objects(models, folder, *, cache_dir=None):  # models: {name: Image2Vec}
    """Object naming on one photo per ImageNet class (`folder`/labels.tsv + images/): the share of
    photos whose k summary words include a word of their class (its name, a synonym or its nearest
    caption-word hypernym, `i2v/imagenet_words.tsv`), k = 3 and 5.

    The photos are probably in the backbone's own training set: a coverage check, not a score to tune.
    """
    import csv

    from .openvocab import load_class_words

    try:
        with open(Path(folder) / "labels.tsv", newline="") as f:
            rows = list(csv.DictReader(f, delimiter="\t"))
        paths = [str(Path(folder) / "images" / r["file"]) for r in rows]
        classes = [int(r["class_index"]) for r in rows]
    except (OSError, KeyError, ValueError) as e:
        raise UserError(f"cannot read {folder}/labels.tsv: {e}") from None
    feats, logits, ok, _ = extract(paths, cache_dir=cache_dir, progress=False)
    class_words = load_class_words()
    out = {"photos": len(ok)}
    for name, model in models.items():
        codes = model.encode(feats, logits)
        row = {}
        for k in (3, 5):
            summaries, _ = model.summarize_codes(codes, k)
            row[f"acc@{k}"] = float(np.mean([bool({w for w, _ in s} & set(class_words[classes[i]]))
                                             for s, i in zip(summaries, ok)]))
        out[name] = row
    return out


def record_report(report, fmt, data, split):
    """Keep each model's scores in its own checkpoint config, under "fmt:dataname[:split]"."""
    key = f"{fmt}:{Path(data).name}" + (f":{split}" if split else "")
    for name, metrics in report["models"].items():
        if not name.startswith("ref:"):
            checkpoint.record_metrics(name, key, metrics)


# -- open-world vocabulary ------------------------------------------------------------------
def everyday_words(coco_json, *, min_images=5, cache_dir=None):
    """{word: number of photos} of the nouns/adjectives that >= `min_images` photos' captions use
    in a COCO captions file (its text only: no pixels are needed)."""
    from collections import Counter

    from .data import Dataset

    try:
        doc = json.loads(Path(coco_json).read_text())
        by_image = {}
        for a in doc["annotations"]:
            by_image.setdefault(a["image_id"], []).append(str(a["caption"]))
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UserError(f"cannot read COCO captions {coco_json}: {e}") from None
    words, _ = tagged_words(Dataset(list(map(str, by_image)), list(by_image.values()), source=str(coco_json)),
                            cache_dir)
    counts = Counter(w for caps in words for w in {w for c in caps for w in c})
    return {w: n for w, n in counts.items() if n >= min_images}


def extend_vocabulary(model_name, out, *, coco, min_images=5, cache_dir=None, command=None, log=print):
    """Write an open-world version of a model to `out`: its words plus ImageNet class words and
    everyday (COCO caption) words, each with a column of D (see `i2v.openvocab`); the weight of
    each new source is the largest that keeps Flickr8k dev P@3 within DEV_TOLERANCE."""
    from .data import load_dataset
    from .evaluate import precision_recall_at_k, truth_sets
    from .models import Image2Vec
    from .openvocab import (DEV_TOLERANCE, class_word_targets, fit_word_map, load_class_words, mapped_columns,
                            regress_columns)
    from .text import Vocab
    from .wordvec import load_glove

    model = load_model(model_name)
    rec = model.config.get("train_data", {})
    data = recorded_training_data(model)
    if rec.get("format") not in ("flickr8k", "flickr30k") or not data:
        raise UserError("extend needs the Flickr folder the model was trained on (its dev split chooses the weights)")
    ptr = prepare(load_dataset(rec["format"], data, images=rec.get("image_dir"), split=rec.get("split")),
                  cache_dir=cache_dir)
    pdev = prepare(load_dataset(rec["format"], data, images=rec.get("image_dir"), split="dev"), cache_dir=cache_dir)
    kv, class_words = load_glove(), load_class_words()
    old = set(model.vocab.words)
    inet = sorted({w for ws in class_words.values() for w in ws if w in kv} - old)
    wv = sorted(w for w in everyday_words(coco, min_images=min_images, cache_dir=cache_dir)
                if w not in old and w not in set(inet) and w in kv)
    log(f"{len(old)} caption words, {len(inet)} ImageNet class words, {len(wv)} everyday words from word vectors")
    cols = {"imagenet": regress_columns(model.encode(ptr.features, ptr.logits),
                                        class_word_targets(ptr.logits, class_words, inet))}
    have = [w for w in model.vocab.words if w in kv]
    word_map = fit_word_map(np.stack([kv[w] for w in have + inet]),
                            np.concatenate([model.D[:, [model.vocab.index[w] for w in have]], cols["imagenet"]], 1))
    cols["word-vectors"] = mapped_columns(word_map, np.stack([kv[w] for w in wv]))
    new = {"imagenet": inet, "word-vectors": wv}

    def build(weights):
        words, D, ww, sources = list(model.vocab.words), [model.D], [model.arrays["word_weights"]], []
        for src, a in weights.items():
            if a > 0:
                words += new[src]
                D.append(cols[src])
                ww.append(np.full(len(new[src]), a, np.float32))
                sources += [src] * len(new[src])
        vocab = Vocab(words, list(model.vocab.counts) + [0] * len(sources), dict(model.vocab.forms),
                      list(model.vocab.sources) + sources)
        arrays = dict(model.arrays, D=np.concatenate(D, 1), word_weights=np.concatenate(ww), word_map=word_map)
        return Image2Vec(model.kind, vocab, arrays, dict(model.config, source_weights=dict(weights)))

    dev_codes = model.encode(pdev.features, pdev.logits)

    def dev_p3(m):
        summaries, fit = m.summarize_codes(dev_codes, 3)
        return precision_recall_at_k([[w for w, _ in s] for s in summaries], truth_sets(pdev.captions, m.vocab), 3)[0], fit

    base, _ = dev_p3(model)
    weights = {"imagenet": 0.0, "word-vectors": 0.0}
    for src in weights:  # the largest weight that holds dev P@3
        for a in (0.25, 0.5, 0.75, 1.0, 1.25, 1.5):
            p3, _ = dev_p3(build(dict(weights, **{src: a})))
            log(f"dev P@3 with {src} weight {a}: {p3:.3f} (original {base:.3f})")
            if p3 < base - DEV_TOLERANCE:
                break
            weights[src] = a
    extended = build(weights)
    p3, fit = dev_p3(extended)
    extended.config.update(
        unfamiliar_fit=round(float(np.percentile(fit, 5)), 4),  # 95 % of dev photos are explained better
        open_vocabulary={"from": str(model.name), "dev_p@3": round(p3, 4), "dev_p@3_original": round(base, 4),
                         "words": {s: int(sum(x == s for x in extended.vocab.sources)) for s in ("captions", "imagenet",
                                                                                             "word-vectors")},
                         "everyday_words": f"{Path(coco).name}, >= {min_images} photos"})
    if command:
        extended.config["command"] = command
    checkpoint.save(extended, out)
    return extended


# -- photo -> code --------------------------------------------------------------------------
def read_photo(photo, backbone):
    """Features (1, F) and logits (1, 1000) of one photo (path or PIL image); UserError if unreadable."""
    if photo is None:
        raise UserError("no photo: upload one, paste one or pick an example")
    try:
        return get_backbone(backbone).encode_images([photo])
    except ImageError as e:
        raise UserError(f"this file is not a photo we can read ({e.reason})") from None


def encode_photo(model, photo):
    """The code (d,) of one photo under `model`: the one photo -> code path."""
    return model.encode(*read_photo(photo, model.backbone))[0]


def summarize(model, code, k=3):
    """{"words": [(word, weight)], "fit": share of the code's squared norm the words explain,
    "sources": {word: where its vector comes from}, "familiar": False when the fit is below what
    95 % of the dev photos reach (the photo is unlike the training photos; None: no threshold)}."""
    words, fit = model.summarize_codes(np.asarray(code)[None], check_k(k, "summarize"))
    threshold = model.config.get("unfamiliar_fit")
    return {"words": words[0], "fit": float(fit[0]), "sources": {w: model.word_source(w) for w, _ in words[0]},
            "familiar": None if threshold is None else bool(fit[0] >= threshold)}


def summarize_photos(model, photos, k=3):
    """Summaries of photo files; yields ("ok", photo, summary) or ("error", photo, message) in order."""
    k = check_k(k, "summarize")
    for photo in photos:
        try:
            yield "ok", photo, summarize(model, encode_photo(model, photo), k)
        except UserError as e:
            yield "error", photo, str(e)


# -- text (+ photo) -> query vector ---------------------------------------------------------
def query_vector(model, text, photo=None):
    """The vector of a query: a word sum, plus a photo's code when `photo` is given.

    With a photo, an empty query means the photo alone and plain words mean "photo + words".
    Returns (q (d,), terms [(word, weight)], photo_weight); raises UserError.
    """
    text = "" if text is None else text
    if photo is not None and isinstance(text, str) and not text.strip():
        terms, photo_weight = [], 1.0
    else:
        try:
            terms, photo_weight = resolve(text, model.vocab, allow_photo=photo is not None, known=model.knows)
        except QueryError as e:
            fixes = [re.sub(rf"(?<![a-z]){re.escape(w)}(?![a-z])", s, text, count=1, flags=re.I)
                     for w, s in e.replacements]
            raise UserError(str(e), list(dict.fromkeys(f for f in fixes if f != text))[:6]) from None
    q = model.word_sum(terms)
    if photo is not None:
        photo_weight = photo_weight or 1.0
        q = q + photo_weight * encode_photo(model, photo)
    if not np.isfinite(q).all():
        raise UserError("the weights are too large: use weights such as 2*dog or 0.5*grass")
    if not np.any(q):
        raise UserError("the words cancel out: nothing left to search for")
    return q, terms, photo_weight


def format_query(terms, photo_weight=0.0, model=None):
    """The query as a person would write it: '[photo] - snow + beach', '2*dog + grass'; with a
    model, words without photos of their own say where their vector comes from."""
    parts = ([(PHOTO, photo_weight)] if photo_weight else []) + list(terms)
    if model is not None:
        from .openvocab import SOURCE_LABELS

        parts = [(t if t == PHOTO or model.word_source(t) == "captions" else
                  f"{t} ({SOURCE_LABELS[model.word_source(t)]})", w) for t, w in parts]
    out = ""
    for i, (t, w) in enumerate(parts):
        sign = "-" if w < 0 else "+"
        term = t if abs(w) == 1 else f"{abs(w):g}*{t}"
        out += (f"-{term}" if sign == "-" else term) if i == 0 else f" {sign} {term}"
    return out


# -- index ----------------------------------------------------------------------------------
def open_index(folder, model, *, normalize=True, log=None):
    """The index in `folder` when it holds this model's codes under the same distance, else a new one.

    A missing, stale or unreadable index is replaced by an empty one (rebuilt by `sync_index`).
    """
    try:
        index = GalleryIndex.load(folder)
    except FileNotFoundError:
        index = None
    except ValueError as e:
        if log:
            log(f"{e}; rebuilding it")
        index = None
    if index is not None and index.compressed:
        raise UserError(f"{folder} holds a compressed index (search only): index into another folder, then "
                        f"`python -m i2v compress` it")
    if index is not None and not index.is_current(model, normalize):
        if log:
            log(f"index {folder} holds codes of another model or distance; rebuilding it")
        index = None
    if index is None:
        index = GalleryIndex(model.dim, model.name, normalize=normalize)
        index.fingerprint = model.fingerprint
    return index


def sync_index(index, paths, model, *, cache_dir=None, progress=True, prune=True, keep_under=(), use_cache=True,
               encoder=None, stats=None):
    """Bring `index` up to date with `paths` (a file is current when its path, size and mtime match).

    New and changed files are encoded; with `prune`, files no longer listed are dropped, except
    those under a folder of `keep_under` (folders that could not be listed: unknown, not gone).
    encoder : optional callable [(path, size, mtime)] -> (codes (m, d), ok indices, errors); the
    default runs the backbone here (with the feature cache), `ray_encoder` on a Ray cluster.
    stats : optional [(size, mtime) or None] of `paths` when known (filesystem URIs), else read here.
    Returns (added, removed, errors) with errors a list of "path: reason".
    """
    assert index.is_current(model, index.normalize), "open the index with open_index()"
    stats = stat_files(paths) if stats is None else stats
    current = {p: (s, m) for p, s, m in zip(index.paths, index.sizes, index.mtimes)}
    wanted = {p: st for p, st in zip(paths, stats) if st is not None}
    errors = [f"{p}: cannot read file" for p, st in zip(paths, stats) if st is None]
    todo = [p for p, st in wanted.items() if current.get(p) != st]
    unknown = tuple(os.path.join(d, "") for d in keep_under)
    keep = [i for i, p in enumerate(index.paths)
            if (p in wanted and current[p] == wanted[p]) or (p not in wanted and (not prune or p.startswith(unknown)))]
    removed = len(index) - len(keep) - sum(1 for p in todo if p in current)
    codes, kept = index.codes[keep], [index.paths[i] for i in keep]
    sizes, mtimes = [index.sizes[i] for i in keep], [index.mtimes[i] for i in keep]
    added = 0
    if todo:
        if encoder is None:
            feats, logits, ok, errs = extract(todo, cache_dir=cache_dir, progress=progress, backbone=model.backbone,
                                              use_cache=use_cache)
            new = model.encode(feats, logits) if ok else None
        else:
            new, ok, errs = encoder([(p, *wanted[p]) for p in todo])
        errors += errs
        if ok:
            codes = np.concatenate([codes, new])
            kept += [todo[i] for i in ok]
            sizes += [wanted[todo[i]][0] for i in ok]
            mtimes += [wanted[todo[i]][1] for i in ok]
            added = len(ok)
    index.set(codes, kept, sizes, mtimes)
    return added, max(removed, 0), errors


@contextlib.contextmanager
def index_lock(folder, log=None):
    """An exclusive lock on an index folder for a whole load -> sync -> save (two runs never
    interleave, so neither loses the other's update)."""
    import fcntl

    Path(folder).mkdir(parents=True, exist_ok=True)
    with open(Path(folder) / ".lock", "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if log:
                log(f"waiting for another index run on {folder}")
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def ray_encoder(model, folder, *, address=None, workers=2, log=None):
    """A `sync_index` encoder that runs on Ray (`i2v.rayengine`), keeping its shards in `folder`
    (one folder a model: `index_folders` uses OUT/ray-shards/<model fingerprint>)."""
    from .rayengine import encode_files

    def encode(files):
        got = encode_files(files, checkpoint.resolve(model.name).resolve(), folder, address=address, workers=workers,
                           log=log)
        ok = [i for i, f in enumerate(files) if got.get(tuple(f), (None,))[0] is not None]
        good = set(ok)
        errors = [f"{f[0]}: {got[tuple(f)][1]}" if tuple(f) in got else f"{f[0]}: not encoded"
                  for i, f in enumerate(files) if i not in good]
        codes = np.stack([got[tuple(files[i])][0] for i in ok]) if ok else np.zeros((0, model.dim), np.float32)
        return codes, ok, errors
    return encode


COMPRESS_ABOVE = 1_000_000  # photos: from here `index --engine ray` builds a compressed index (i2v.compressed)


def list_photos(folders):
    """Image files under local folders and pyarrow filesystem URIs (`s3://...`; read on Ray).

    Returns (paths, stats [(size, mtime) or None], errors, unreadable folders)."""
    from .data import scan_images
    from .rayengine import is_uri, list_uri

    local = [f for f in folders if not is_uri(f)]
    paths, errors, unreadable = scan_images(local) if local else ([], [], [])
    stats = stat_files(paths)
    for uri in (f for f in folders if is_uri(f)):
        try:
            listed = list_uri(str(uri))
        except (OSError, ValueError) as e:  # pyarrow: unknown scheme, no credentials, unreachable
            raise UserError(f"cannot list {uri}: {e}") from None
        paths += [p for p, _, _ in listed]
        stats += [(size, mtime) for _, size, mtime in listed]
    return paths, stats, errors, unreadable


def index_folders(folders, out, *, model_name=None, normalize=True, cache_dir=None, engine="local", address=None,
                  workers=2, compressed=None, log=print):
    """Index the photos under `folders` into `out` (incremental). Returns a summary dict and the errors.

    The model is the one named, else the one the index was built with, else the default.
    Entries under folders that could not be listed are kept (and reported), never dropped.
    engine "ray" encodes on a Ray cluster (`address`: None = a local one of `workers` CPUs) and
    also reads filesystem URIs. compressed: build a compressed index from the Ray engine's shards
    (None: when `out` holds one already, or from COMPRESS_ABOVE photos on the Ray engine).
    """
    from .rayengine import SHARDS, is_uri

    if engine not in ("local", "ray"):
        raise UserError(f"engine {engine!r}: expected local or ray")
    uri = next((f for f in folders if is_uri(f)), None)
    if uri and engine != "ray":
        raise UserError(f"{uri}: filesystem URIs are read on the Ray engine: add --engine ray")
    try:
        paths, stats, errors, unreadable = list_photos(folders)
    except FileNotFoundError as e:
        raise UserError(str(e)) from None
    for d in unreadable:
        log(f"warning: cannot list {d}: its photos already in the index are kept, new ones are not added")
    with index_lock(out, log):
        old = GalleryIndex.header(out) or {}  # the model it was built with, its kind
        model = load_model(model_name or (old.get("model") if isinstance(old.get("model"), str) else None))
        if compressed is None:
            compressed = old.get("kind") == "compressed" or (engine == "ray" and len(paths) >= COMPRESS_ABOVE)
        if compressed and engine != "ray":
            raise UserError("a compressed index is filled from the Ray engine's Parquet shards: add --engine ray "
                            "(or index here, then `python -m i2v compress` it)")
        if engine == "local" and len(paths) >= COMPRESS_ABOVE:
            log(f"{len(paths)} photos: `--engine ray` would build a compressed index (~45 bytes of RAM a photo)")
        log(f"{len(paths)} image files under {', '.join(map(str, folders))}")
        shards = Path(out) / SHARDS / str(model.fingerprint)
        if compressed:
            summary, errs = _index_compressed(paths, stats, model, out, shards, normalize=normalize,
                                              keep_under=unreadable, address=address, workers=workers, log=log)
        else:
            index = open_index(out, model, normalize=normalize, log=log)
            encoder = ray_encoder(model, shards, address=address, workers=workers, log=log) if engine == "ray" \
                else None
            added, removed, errs = sync_index(index, paths, model, cache_dir=cache_dir, keep_under=unreadable,
                                              encoder=encoder, stats=stats)
            index.save(out)
            summary = {"index": str(Path(out)), "photos": len(index), "added": added, "removed": removed}
    errors += errs + [f"{d}: cannot list this folder" for d in unreadable]
    return dict(summary, skipped=len(errors)), errors


def _index_compressed(paths, stats, model, out, shards, *, normalize, keep_under, address, workers, log):
    """Encode what the shards lack on Ray, then build the compressed index from them, streamed
    (the shards are the store of codes: a re-run encodes only new and changed files)."""
    from .compressed import build_compressed
    from .rayengine import encode_files, iter_codes

    files = [(p, *st) for p, st in zip(paths, stats) if st is not None]
    errors = [f"{p}: cannot read file" for p, st in zip(paths, stats) if st is None]
    encoded = encode_files(files, checkpoint.resolve(model.name).resolve(), shards, address=address,
                           workers=workers, collect=False, log=log)
    count, errs, chunks, stale = iter_codes(shards, files, dim=model.dim, keep_under=keep_under)
    if not count:
        raise UserError(f"no photo could be encoded ({len(errs)} failed): nothing to index")
    note = f" ({abs(stale)} older shard rows left out{', the shards compacted' if stale < 0 else ''})" if stale else ""
    log(f"building the compressed index of {count} photos{note}")
    index = build_compressed(chunks, out, dim=model.dim, model_name=model.name, fingerprint=model.fingerprint,
                             normalize=normalize, expected=count, log=log)
    return {"index": str(Path(out)), "photos": len(index), "encoded": encoded, "compressed": True}, errors + errs


def load_index(folder, model_name=None):
    """(index, model) for searching; the model is the index's own unless another is named, and
    a model whose codes are not the index's is refused (its distances would be meaningless)."""
    try:
        index = GalleryIndex.load(folder)
    except (FileNotFoundError, ValueError) as e:
        raise UserError(str(e)) from None
    model = load_model(model_name or index.model_name)
    if not index.is_current(model, index.normalize):
        which = f"model {model_name!r}" if model_name else f"its model {index.model_name!r}, which has changed since"
        raise UserError(f"the index {folder} was not built with {which}: re-run "
                        f"`python -m i2v index ... --out {folder}" + (f" --model {model_name}`" if model_name else "`"))
    return index, model


SAME_PHOTO = 0.1  # unit codes closer than this are one photo (re-encoded copies: 0.02-0.04; others > 0.6)


def compress_index(src, out, *, log=print):
    """Write a compressed copy (IVF-PQ + re-ranking, `i2v.compressed`) of the index in `src` to `out`.

    Returns the CompressedIndex. For collections above a few hundred thousand photos."""
    from .compressed import build_compressed

    if Path(out).resolve() == Path(src).resolve():
        raise UserError("compress writes a new folder: give an --out other than the source index")
    index = GalleryIndex.load(src)
    if index.compressed:
        raise UserError(f"{src} is already compressed")
    step = 100_000
    shards = ((index.paths[s:s + step], index.codes[s:s + step]) for s in range(0, len(index), step))
    with index_lock(out, log):
        return build_compressed(shards, out, dim=index.dim, model_name=index.model_name, fingerprint=index.fingerprint,
                                normalize=index.normalize, expected=len(index), log=log)


def search(indexes, q, k):
    """[(path, distance)] nearest first over one or more indexes.

    A photo found twice counts once: the same path, or (across indexes, e.g. a gallery photo
    also added to "My photos") codes closer than SAME_PHOTO.
    """
    from .models import normalize_rows

    k = check_k(k, "search")
    hits = [(d, i, index.path_of(row), normalize_rows(index.code_of_row(row)))
            for i, index in enumerate(indexes) for row, d in index.search_rows(q, k)]
    kept, seen = [], set()
    for d, source, path, code in sorted(hits, key=lambda h: h[0]):
        if path in seen or any(s != source and np.linalg.norm(code - c) < SAME_PHOTO for _, s, _, c in kept):
            continue  # near-identical photos of one index (bursts) all stay; a copy in another does not
        seen.add(path)
        kept.append((d, source, path, code))
        if len(kept) == k:
            break
    return [(path, d) for d, _, path, _ in kept]


# -- words ----------------------------------------------------------------------------------
def neighbours(model, word, k=10):
    """A word's visual neighbours (columns of D) beside its GloVe neighbours; UserError if neither knows it."""
    from .wordvec import compare_neighbours

    if not isinstance(word, str) or not word.strip():
        raise UserError("type a word, e.g. yellow")
    if len(word) > 50 or len(word.split()) > 1 or not word.isprintable():
        raise UserError("type a single word, e.g. yellow")
    k = check_k(k, "neighbours")
    try:
        return compare_neighbours(model, word, k)
    except KeyError as e:
        raise UserError(str(e.args[0])) from None
