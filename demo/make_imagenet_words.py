"""Write i2v/imagenet_words.tsv: for each ImageNet class, the words that name it (see
`i2v.openvocab.build_class_words`). Needs Debian's wordnet-base (WordNet 3.0) and the text of
COCO captions; the table it writes is what ships.

    python demo/make_imagenet_words.py [--labels ../shared/data/imagenet_samples/labels.tsv]
        [--coco ../shared/data/coco_captions/captions_val2017_text_only.json]
"""
import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def main():
    from i2v import checkpoint
    from i2v.atomic import write_bytes
    from i2v.openvocab import CLASS_WORDS, build_class_words
    from i2v.pipeline import everyday_words
    from i2v.wordvec import load_glove

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    shared = REPO.parent / "shared" / "data"
    ap.add_argument("--labels", default=shared / "imagenet_samples" / "labels.tsv")
    ap.add_argument("--coco", default=shared / "coco_captions" / "captions_val2017_text_only.json")
    ap.add_argument("--wordnet", default="/usr/share/wordnet")
    args = ap.parse_args()
    captions = set(checkpoint.load("learn-all").vocab.words) | set(everyday_words(args.coco))
    kv = load_glove()
    rows = build_class_words(args.labels, captions, args.wordnet, known=set(kv.key_to_index))
    lines = ["class_index\twnid\tname\twords"] + [f"{c}\t{w}\t{n}\t{','.join(ws)}" for c, w, n, ws in rows]
    write_bytes(CLASS_WORDS, "\n".join(lines) + "\n")
    print(f"wrote {CLASS_WORDS}: {len(rows)} classes, {len({w for *_, ws in rows for w in ws})} words")


if __name__ == "__main__":
    main()
