"""Command line: python -m i2v <command> --help."""
import argparse
import json
import os
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


def _log(msg):
    print(msg, file=sys.stderr, flush=True)


def _safe(text):
    """A path or word as printable text (control characters escaped, undecodable bytes shown)."""
    text = str(text)
    return text if text.isprintable() else text.encode("unicode_escape", "backslashreplace").decode("ascii")


def cmd_features(args):
    from .data import load_dataset
    from .pipeline import prepare

    ds = load_dataset(args.format, args.data, images=args.images, split=args.split)
    _report_skipped(ds)
    _log(f"{len(ds)} images in {ds.source}")
    prep = prepare(ds, cache_dir=args.cache, backbone=args.backbone)
    for e in prep.errors:
        _log("unreadable: " + _safe(e))
    if args.out:
        from .atomic import atomic_path

        with atomic_path(args.out) as tmp:
            np.savez(tmp, paths=np.array([ds.paths[i] for i in prep.ok]), features=prep.features, logits=prep.logits)
        _log(f"wrote {args.out}")
    print(json.dumps({"images": len(ds), "extracted": len(prep.ok), "unreadable": len(prep.errors),
                      "skipped_entries": len(ds.skipped)}))
    return 0 if not prep.errors else 1


def cmd_train(args):
    import time

    from .pipeline import train

    t0 = time.time()
    model, ds, prep = train(args.model, args.format, args.data, out=args.out, images=args.images, split=args.split,
                            cache_dir=args.cache, min_count=args.min_count, dim=args.dim, epochs=args.epochs,
                            seed=args.seed, omp_ridge=args.omp_ridge, drop=args.drop, wrong=args.wrong,
                            command="python -m i2v " + " ".join(args.argv), log=_log)
    _report_skipped(ds)
    for e in prep.errors:
        _log("unreadable, left out: " + _safe(e))
    _log(f"wrote {args.out} ({time.time() - t0:.0f} s)")
    return 0


def cmd_eval(args):
    from .atomic import write_bytes
    from .pipeline import evaluate, record_report

    names = args.models.split(",") if args.models else None
    report = evaluate(names, args.format, args.data, images=args.images, split=args.split,
                      train_data=args.train_data, cache_dir=args.cache, objects=args.objects, log=_log)
    _print_table(report["models"])
    if "objects" in report:
        print(f"\nobject naming, {report['objects']['photos']} photos (one per ImageNet class; likely seen by the backbone):")
        for name, m in report["objects"].items():
            if name != "photos":
                print(f"{name:22s}  acc@3 {m['acc@3']:.3f}  acc@5 {m['acc@5']:.3f}")
    if args.record:
        record_report(report, args.format, args.data, args.split)
    if args.json:
        write_bytes(args.json, json.dumps(report, indent=1) + "\n")
        _log(f"wrote {args.json}")
    return 0


def cmd_extend(args):
    from .pipeline import extend_vocabulary

    model = extend_vocabulary(args.model, args.out, coco=args.coco, min_images=args.min_images, cache_dir=args.cache,
                              command="python -m i2v " + " ".join(args.argv), log=_log)
    print(json.dumps(dict(model.config["open_vocabulary"], source_weights=model.config["source_weights"],
                          unfamiliar_fit=model.config["unfamiliar_fit"])))
    return 0


def _print_table(rows):
    cols = ["p@3", "r@3", "p@5", "r@5", "t2i_r@1", "t2i_r@5", "t2i_r@10", "t2i_medr", "ip_t2i_r@1", "unit_t2i_r@1"]
    print(f"{'model':22s}" + "".join(f"{c:>13s}" for c in cols))
    for name, m in rows.items():
        print(f"{name:22s}" + "".join(f"{m[c]:13.3f}" if c in m else f"{'-':>13s}" for c in cols))


def summary_json(photo, summary):
    return {"image": str(photo), "words": [{"word": w, "weight": round(c, 4), "source": summary["sources"][w]}
                                           for w, c in summary["words"]],
            "fit": round(summary["fit"], 4), "familiar": summary["familiar"]}


def cmd_summarize(args):
    from .pipeline import load_model, summarize_photos

    model = load_model(args.model)
    results, failed = [], 0
    for status, photo, res in summarize_photos(model, args.photos, args.k):
        if status == "error":
            _log(f"error: {_safe(photo)}: {res}")
            failed += 1
        elif args.json:
            results.append(summary_json(photo, res))
        else:
            print(f"{_safe(photo)}: " + " + ".join(f"{w} ({c:.2f})" for w, c in res["words"]), flush=True)
    if args.json:
        print(json.dumps(results, indent=1))
    return 1 if failed else 0


def cmd_index(args):
    from .pipeline import index_folders

    summary, errors = index_folders(args.folders, args.out, model_name=args.model, normalize=not args.raw_l2,
                                    cache_dir=args.cache, engine=args.engine, address=args.address,
                                    workers=args.workers, compressed=args.compressed, log=_log)
    for e in errors:
        _log("skipped: " + _safe(e))
    print(json.dumps(summary))
    return 0


def cmd_compress(args):
    from .pipeline import compress_index

    ix = compress_index(args.index, args.out, log=_log)
    print(json.dumps({"index": args.out, "photos": len(ix), "lists": ix.header["nlist"], "nprobe": ix.header["nprobe"]}))
    return 0


def cmd_search(args):
    from .pipeline import format_query, load_index, query_vector, search

    index, model = load_index(args.index, args.model)
    q, terms, photo_weight = query_vector(model, args.query, photo=args.photo)
    hits = search([index], q, args.k)
    _log(f"searched for: {format_query(terms, photo_weight, model)}")
    if args.json:
        print(json.dumps([{"path": p, "distance": round(d, 4)} for p, d in hits], indent=1))
    else:
        for p, d in hits:
            print(f"{d:8.3f}  {_safe(p)}")
    return 0


def _print_neighbours(res):
    print(f"visual neighbours of {res['word']!r} (columns of D):")
    print("  " + (", ".join(f"{w} {s:.2f}" for w, s in res["visual"]) or res.get("visual_error", "")))
    print("text neighbours (GloVe 6B 50d):")
    print("  " + (", ".join(f"{w} {s:.2f}" for w, s in res["text"]) or res.get("text_error", "")))


def cmd_neighbours(args):
    from .pipeline import UserError, check_k, load_model, neighbours

    model, k = load_model(args.model), check_k(args.k, "neighbours")
    if args.word:
        res = neighbours(model, args.word, k)
        if args.json:
            print(json.dumps({"visual": res["visual"], "text": res["text"]}))
        else:
            _print_neighbours(res)
        return 0
    while True:  # the original demo's prompt; an empty line or Ctrl-D also quits
        try:
            word = input("Enter word (break, an empty line or Ctrl-D to quit): ").strip()
        except EOFError:
            return 0
        if word in ("", "break", "quit", "exit"):
            return 0
        try:
            _print_neighbours(neighbours(model, word, k))
        except UserError as e:
            print(f"error: {e}")


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
    p.add_argument("--epochs", type=int, default=None, help="learn-all/weak-tag epochs (default: JointConfig's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--omp-ridge", type=float, default=None,
                   help="ridge on OMP's refits when summarizing (0 = plain OMP; default: the one chosen on dev)")
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
    p.add_argument("--objects", help="also name objects: a folder with labels.tsv + images/ (e.g. imagenet_samples)")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("extend", help="open-world words: add ImageNet class words and everyday words to a model",
                       description="Give ImageNet class words (from the network's head) and everyday caption words "
                                   "(from GloVe) columns of D; their weights are chosen on the Flickr8k dev split.")
    p.add_argument("--model", default=None, help="the model to extend (default: the default model)")
    p.add_argument("--coco", required=True, help="a COCO captions .json (its text: the everyday words)")
    p.add_argument("--out", required=True, help="checkpoint folder to write (e.g. checkpoints/open-world)")
    p.add_argument("--min-images", type=int, default=5, help="keep everyday words named by >= N photos")
    p.add_argument("--cache", help="feature cache folder")
    p.set_defaults(func=cmd_extend)

    p = sub.add_parser("summarize", help="summarize photos in k words",
                       description="Summarize each photo in k words by sparse recovery (OMP).")
    p.add_argument("photos", nargs="+", metavar="PHOTO")
    p.add_argument("--model", default=None, help="checkpoint name or folder (default: the best model)")
    p.add_argument("-k", type=int, default=3, help="number of words (default 3)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_summarize)

    p = sub.add_parser("index", help="index photo folders for search (incremental)",
                       description="Walk folders, encode photos, write a FAISS index; re-runs add, update, drop.")
    p.add_argument("folders", nargs="+", metavar="DIR",
                   help="folders or files; with --engine ray also URIs pyarrow reads (s3://bucket/photos, file:///...)")
    p.add_argument("--out", required=True, help="index folder")
    p.add_argument("--model", default=None, help="checkpoint name or folder (default: the index's, else the best)")
    p.add_argument("--cache", help="feature cache folder")
    p.add_argument("--raw-l2", action="store_true",
                   help="L2 on raw codes (best for photos like the training set); default: unit-length codes")
    p.add_argument("--engine", choices=["local", "ray"], default="local",
                   help="ray: encode on a Ray cluster (Parquet shards in OUT/ray-shards; re-runs resume)")
    p.add_argument("--address", help="Ray cluster to join: auto or ray://HOST:PORT (default: start a local one)")
    p.add_argument("--workers", type=int, default=2, help="Ray actors (one network each; default 2)")
    p.add_argument("--compressed", action="store_true", default=None,
                   help="with --engine ray: a compressed index (IVF-PQ, ~45 bytes of RAM a photo) filled from the "
                        "Parquet shards; automatic from 1,000,000 photos and when OUT holds one")
    p.set_defaults(func=cmd_index)

    p = sub.add_parser("compress", help="a compressed copy of an index for large collections (search only)",
                       description="IVF-PQ in memory (~45 bytes a photo) with exact re-ranking from disk; "
                                   "`search` and the app load it like any index.")
    p.add_argument("index", help="an index folder from `index`")
    p.add_argument("--out", required=True, help="folder for the compressed index")
    p.set_defaults(func=cmd_compress)

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
    dashed = next((a for a in argv if a.startswith("-") and len(a) > 1 and os.path.exists(a)), None)
    if dashed and "--" not in argv:  # argparse would read the file name as options
        print(f"note: {_safe(dashed)} is read as options; a file name starting with '-' goes after `--` "
              f"(python -m i2v {argv[0] if argv else 'summarize'} -- {_safe(dashed)}) or as ./{_safe(dashed)}",
              file=sys.stderr)
    args = parser.parse_args(argv)
    args.argv = argv
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("interrupted; finished work is kept and a re-run resumes", file=sys.stderr)
        return 130
    except (ValueError, KeyError, OSError, RuntimeError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"error: {_safe(msg)}", file=sys.stderr)
        return 2
