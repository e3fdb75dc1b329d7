"""Command line: python -m i2v <command> --help."""
import argparse
import json
import sys

import numpy as np


def _add_data_args(p, split_default=None):
    from .data import FORMATS

    p.add_argument("--data", required=True, help="Flickr folder, COCO captions .json, or tags .csv")
    p.add_argument("--format", required=True, choices=FORMATS, help="dataset format")
    p.add_argument("--images", help="image folder (COCO, tags CSV; Flickr default DATA/images)")
    p.add_argument("--split", default=split_default, choices=["train", "dev", "test"],
                   help="Flickr split (default: %(default)s)")
    p.add_argument("--cache", help="feature cache folder (default ~/.cache/i2v or $I2V_CACHE)")


def _report_skipped(ds, limit=10):
    if ds.skipped:
        print(f"skipped {len(ds.skipped)} entries:", file=sys.stderr)
        for s in ds.skipped[:limit]:
            print("  " + s, file=sys.stderr)
        if len(ds.skipped) > limit:
            print(f"  ... and {len(ds.skipped) - limit} more", file=sys.stderr)


def cmd_features(args):
    import numpy as np

    from .data import load_dataset
    from .features import extract

    ds = load_dataset(args.format, args.data, images=args.images, split=args.split)
    _report_skipped(ds)
    print(f"{len(ds)} images in {ds.source}", file=sys.stderr)
    feats, logits, ok, errors = extract(ds.paths, backbone=args.backbone, cache_dir=args.cache,
                                        batch_size=args.batch_size)
    for e in errors:
        print("unreadable: " + e, file=sys.stderr)
    if args.out:
        np.savez(args.out, paths=np.array([ds.paths[i] for i in ok]), features=feats, logits=logits)
        print(f"wrote {args.out}", file=sys.stderr)
    print(json.dumps({"images": len(ds), "extracted": len(ok), "unreadable": len(errors),
                      "skipped_entries": len(ds.skipped)}))
    return 0 if not errors else 1


def _train_data_record(args):
    from pathlib import Path

    def absolute(p):
        return str(Path(p).resolve()) if p else None
    return {"format": args.format, "data": args.data, "data_abs": absolute(args.data),
            "image_dir": args.images, "image_dir_abs": absolute(args.images), "split": args.split}


def cmd_train(args):
    import time
    from pathlib import Path

    from . import checkpoint
    from .data import load_dataset
    from .text import build_vocab, count_words
    from .train import JointConfig, backbone_config, fit_baseline, fit_joint, fit_simple, prepare, weak_tags
    from .text import word_matrix

    t0 = time.time()
    if args.split is None and args.format in ("flickr8k", "flickr30k") and \
            (Path(args.data) / "Flickr_8k.trainImages.txt").is_file():
        args.split = "train"  # never train on the dev/test images by accident
    ds = load_dataset(args.format, args.data, images=args.images, split=args.split)
    _report_skipped(ds)
    F, logits, captions, ok, errors = prepare(ds, cache_dir=args.cache)
    for e in errors:
        print("unreadable, left out: " + e, file=sys.stderr)
    vocab = build_vocab([count_words(c) for c in captions], min_count=args.min_count)
    print(f"{len(ok)} images, vocabulary of {len(vocab)} words (min count {args.min_count})", file=sys.stderr)
    data = dict(_train_data_record(args), **ds.summary(), used=len(ok), vocab_size=len(vocab))
    if args.model == "simple":
        model = fit_simple(F, word_matrix([count_words(c) for c in captions], vocab), vocab,
                           dim=args.dim, seed=args.seed)
    elif args.model == "baseline":
        model = fit_baseline(vocab)
    else:
        cfg = JointConfig(**dict(_JOINT_DEFAULTS, dim=args.dim, seed=args.seed, epochs=args.epochs or _JOINT_DEFAULTS["epochs"],
                                 word_weights=args.model == "weak-tag"))
        if args.model == "weak-tag" and ds.kind != "tags":
            # simulated user tags: one random caption's words, some dropped, some wrong
            tags = weak_tags(captions, vocab, drop=args.drop, wrong=args.wrong, seed=args.seed)
            captions = [[[w for w, _ in t]] for t in tags]
            data.update(weak_tags={"from": "one random caption per image", "drop": args.drop, "wrong": args.wrong})
        model = fit_joint(F, captions, vocab, cfg, kind=args.model,
                          log=lambda m: print(m, file=sys.stderr))
    if args.model != "baseline":
        model.config["omp_ridge"] = args.omp_ridge
    model.config.update(backbone_config(), train_data=data, train_seconds=round(time.time() - t0, 1),
                        command="python -m i2v " + " ".join(args.argv))
    out = checkpoint.save(model, args.out)
    print(f"wrote {out} ({time.time() - t0:.0f} s)", file=sys.stderr)
    return 0


# the hyper-parameters chosen on the Flickr8k dev split (see README "Results")
_JOINT_DEFAULTS = dict(dim=256, hidden=1024, epochs=30, fit_weight=1.0, word_loss=1.0, contrastive=3.0,
                       coherence=1.0, cooccurrence=0.0)


def cmd_eval(args):
    from pathlib import Path

    from . import checkpoint
    from .data import load_dataset
    from .evaluate import references, score_model
    from .text import count_words, word_matrix
    from .train import prepare

    names = args.models.split(",") if args.models else checkpoint.list_checkpoints()
    if not names:
        raise ValueError("no trained models: run `python -m i2v train` first")
    models = {n: checkpoint.load(n) for n in names}
    ds = load_dataset(args.format, args.data, images=args.images, split=args.split)
    _report_skipped(ds)
    F, logits, captions, ok, errors = prepare(ds, cache_dir=args.cache)
    report = {"test_data": dict(ds.summary(), split=args.split, used=len(ok)), "models": {}}
    for name, model in models.items():
        print(f"scoring {name}", file=sys.stderr)
        report["models"][name] = score_model(model, F, logits, captions)
        if model.kind == "weak-tag":
            w = model.arrays["word_weights"]
            order = np.argsort(w)
            report["models"][name]["most_down_weighted"] = [[model.vocab.words[j], round(float(w[j]), 3)]
                                                           for j in order[:20]]
    # references are fit on the training data recorded in the first model's checkpoint
    first = next(iter(models.values()))
    rec = first.config.get("train_data", {})
    train_path = args.train_data or rec.get("data")
    if train_path and not Path(train_path).exists():
        train_path = rec.get("data_abs")
    if train_path and Path(train_path).exists():
        tr = load_dataset(rec.get("format", "flickr8k"), train_path, images=rec.get("image_dir"), split=rec.get("split"))
        Ft, _, caps_t, _, _ = prepare(tr, cache_dir=args.cache)
        Xt = word_matrix([count_words(c) for c in caps_t], first.vocab)
        report["models"].update(references(Ft, Xt, F, first.vocab, captions))
        report["references_trained_on"] = dict(tr.summary(), split=rec.get("split"))
    else:
        print(f"training data {train_path!r} not found: references left out (use --train-data)", file=sys.stderr)
    _print_table(report["models"])
    if args.record:  # keep each model's scores in its own checkpoint config
        key = f"{args.format}:{Path(args.data).name}" + (f":{args.split}" if args.split else "")
        for name in models:
            checkpoint.record_metrics(name, key, report["models"][name])
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
        print(f"wrote {args.json}", file=sys.stderr)
    return 0


def _print_table(rows):
    cols = ["p@3", "r@3", "p@5", "r@5", "t2i_r@1", "t2i_r@5", "t2i_r@10", "t2i_medr", "ip_t2i_r@1", "unit_t2i_r@1"]
    print(f"{'model':22s}" + "".join(f"{c:>13s}" for c in cols))
    for name, m in rows.items():
        print(f"{name:22s}" + "".join(f"{m[c]:13.3f}" if c in m else f"{'-':>13s}" for c in cols))


def cmd_summarize(args):
    from . import checkpoint
    from .features import ImageError, get_backbone

    model = checkpoint.load(args.model)
    net = get_backbone(model.config.get("backbone", "efficientnet-lite0"))
    results, failed = [], 0
    for photo in args.photos:
        try:
            feats, logits = net.encode_images([photo])
        except ImageError as e:
            print(f"error: {e}", file=sys.stderr)
            failed += 1
            continue
        words, fit = model.summarize_codes(model.encode(feats, logits), args.k)
        entry = {"image": photo, "words": [{"word": w, "weight": round(c, 4)} for w, c in words[0]],
                 "fit": round(float(fit[0]), 4)}
        results.append(entry)
        if not args.json:
            print(f"{photo}: " + " + ".join(f"{w} ({c:.2f})" for w, c in words[0]), flush=True)
    if args.json:
        print(json.dumps(results, indent=1))
    return 1 if failed else 0


def cmd_index(args):
    from . import checkpoint
    from .data import list_images
    from .index import GalleryIndex, update_index

    from pathlib import Path

    model_name = args.model
    try:
        index = GalleryIndex.load(args.out)
        if model_name and model_name != index.model_name:
            print(f"index was built with model {index.model_name!r}; rebuilding with {model_name!r}", file=sys.stderr)
            index = None
        else:
            model_name = index.model_name
    except FileNotFoundError:
        index = None
    model_name = model_name or checkpoint.DEFAULT_MODEL
    model = checkpoint.load(model_name)
    if index is not None and index.normalize == args.raw_l2:
        print("distance changed: rebuilding the index", file=sys.stderr)
        index = None
    if index is None:
        index = GalleryIndex(model.dim, model_name, normalize=not args.raw_l2)
    paths = list_images(args.folders)
    print(f"{len(paths)} image files under {', '.join(args.folders)}", file=sys.stderr)
    added, removed, errors = update_index(index, paths, model, cache_dir=args.cache)
    index.save(args.out)
    for e in errors:
        print("skipped: " + e, file=sys.stderr)
    print(json.dumps({"index": str(Path(args.out)), "photos": len(index), "added": added, "removed": removed,
                      "skipped": len(errors)}))
    return 0


def query_vector(model, text, photo=None, net=None):
    """The vector of a query (word sum, optionally with a photo's code); raises QueryError."""
    from .features import get_backbone
    from .query import QueryError, resolve

    terms, photo_weight = resolve(text, model.vocab, allow_photo=photo is not None)
    q = model.word_sum(terms)
    if photo is not None:
        if not photo_weight:
            photo_weight = 1.0  # a photo with a plain word sum: "photo + words"
        net = net or get_backbone(model.config.get("backbone", "efficientnet-lite0"))
        feats, logits = net.encode_images([photo])
        q = q + photo_weight * model.encode(feats, logits)[0]
    if not np.isfinite(q).all() or not np.any(q):
        raise QueryError("the words cancel out: the query vector is zero")
    return q, terms


def cmd_search(args):
    from . import checkpoint
    from .index import GalleryIndex

    index = GalleryIndex.load(args.index)
    model = checkpoint.load(args.model or index.model_name)
    q, _ = query_vector(model, args.query, photo=args.photo)
    hits = index.search(q, args.k)
    if args.json:
        print(json.dumps([{"path": p, "distance": round(d, 4)} for p, d in hits], indent=1))
    else:
        for p, d in hits:
            print(f"{d:8.3f}  {p}")
    return 0


def _print_neighbours(res):
    print(f"visual neighbours of {res['word']!r} (columns of D):")
    print("  " + (", ".join(f"{w} {s:.2f}" for w, s in res["visual"]) or res.get("visual_error", "")))
    print("text neighbours (GloVe 6B 50d):")
    print("  " + (", ".join(f"{w} {s:.2f}" for w, s in res["text"]) or res.get("text_error", "")))


def cmd_neighbours(args):
    from . import checkpoint
    from .wordvec import compare_neighbours

    model = checkpoint.load(args.model)
    if args.word:
        res = compare_neighbours(model, args.word, args.k)
        if args.json:
            print(json.dumps({"visual": res["visual"], "text": res["text"]}))
        else:
            _print_neighbours(res)
        return 0
    while True:  # the original demo's prompt
        try:
            word = input("Enter word (break to quit): ").strip()
        except EOFError:
            return 0
        if word in ("break", "quit", "exit"):
            return 0
        if not word:
            continue
        try:
            _print_neighbours(compare_neighbours(model, word, args.k))
        except KeyError as e:
            print(f"error: {e.args[0]}")


def build_parser():
    from .features import DEFAULT_BACKBONE, list_backbones

    parser = argparse.ArgumentParser(prog="python -m i2v", description="image2vec: words <-> photos")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("features", help="extract CNN features of a dataset into the cache",
                       description="Extract EfficientNet-Lite0 features (cached; re-runs resume).")
    _add_data_args(p)
    p.add_argument("--backbone", default=DEFAULT_BACKBONE, choices=list_backbones())
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--out", help="also write paths/features/logits to this .npz")
    p.set_defaults(func=cmd_features)

    from .models import MODELS

    p = sub.add_parser("train", help="train a model on a captioned (or tagged) dataset",
                       description="Train one of the four models; writes a checkpoint folder.")
    _add_data_args(p, split_default=None)
    p.add_argument("--model", required=True, choices=MODELS)
    p.add_argument("--out", required=True, help="checkpoint folder to write (e.g. checkpoints/learn-all)")
    p.add_argument("--min-count", type=int, default=5, help="keep words named by >= N training images")
    p.add_argument("--dim", type=int, default=256, help="code size d")
    p.add_argument("--epochs", type=int, default=None, help="learn-all/weak-tag epochs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--omp-ridge", type=float, default=3.0,
                   help="ridge on OMP's refits when summarizing (0 = plain OMP; 3 chosen on the Flickr8k dev split)")
    p.add_argument("--drop", type=float, default=0.2, help="weak-tag: drop rate of simulated tags")
    p.add_argument("--wrong", type=float, default=0.1, help="weak-tag: wrong-tag rate of simulated tags")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="evaluate every model and the references in one table",
                       description="P@k/R@k of k-word summaries and words->image recall (L2 and inner product).")
    _add_data_args(p, split_default=None)
    p.add_argument("--models", help="comma-separated checkpoint names or folders (default: all in checkpoints/)")
    p.add_argument("--train-data", help="training data for the references (default: the one recorded in the checkpoint)")
    p.add_argument("--json", help="write the report to this file")
    p.add_argument("--record", action="store_true", help="also store each model's scores in its config.json")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("summarize", help="summarize photos in k words",
                       description="Summarize each photo in k words by sparse recovery (OMP).")
    p.add_argument("photos", nargs="+", metavar="PHOTO")
    p.add_argument("--model", default=None, help="checkpoint name or folder (default: the best model)")
    p.add_argument("-k", type=int, default=3, help="number of words (default 3)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_summarize)

    p = sub.add_parser("index", help="index photo folders for search (incremental)",
                       description="Walk folders, encode photos, write a FAISS index; re-runs add, update, drop.")
    p.add_argument("folders", nargs="+", metavar="DIR")
    p.add_argument("--out", required=True, help="index folder")
    p.add_argument("--model", default=None, help="checkpoint name or folder (default: the index's, else the best)")
    p.add_argument("--cache", help="feature cache folder")
    p.add_argument("--raw-l2", action="store_true",
                   help="L2 on raw codes (best for photos like the training set); default: unit-length codes")
    p.set_defaults(func=cmd_index)

    p = sub.add_parser("search", help="find photos from words",
                       description="Query language: 'snow + young', 'dog - leash + ball', '2*dog + 0.5*grass', "
                                   "free text, '[photo] - snow + beach' with --photo.")
    p.add_argument("query")
    p.add_argument("--index", required=True, help="index folder (from `index`)")
    p.add_argument("-k", type=int, default=10)
    p.add_argument("--photo", help="photo for [photo] +/- words queries")
    p.add_argument("--model", default=None, help="(default: the model the index was built with)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("neighbours", help="visual vs text (GloVe) neighbours of a word",
                       description="Nearest words among the columns of D beside GloVe neighbours; no word: a prompt.")
    p.add_argument("word", nargs="?")
    p.add_argument("-k", type=int, default=10)
    p.add_argument("--model", default=None)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_neighbours)

    return parser



def main(argv=None):
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.argv = argv
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("interrupted; finished work is kept and a re-run resumes", file=sys.stderr)
        return 130
    except (ValueError, KeyError, OSError, RuntimeError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"error: {msg}", file=sys.stderr)
        return 2
