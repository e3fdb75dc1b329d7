"""Build demo/gallery/ from the redistributable photos listed in ../shared/data/gallery/sources.tsv.

Each photo is taken from the package that ships it, rotated where the source says so,
downscaled to at most 640 px and re-encoded; ATTRIBUTION.md lists source, author, license.
Share-alike photos go to cc-by-sa/ with their license texts, apart from the open ones.

    apt-get download kphotoalbum lomiri-wallpapers-16.04 lomiri-wallpapers-20.04 palapeli-data tuxpaint-data
    for f in *.deb; do dpkg -x $f pkgroot; done
    pip download --no-deps scikit-image && unzip scikit_image-*.whl 'skimage/data/*' -d pkgroot
    python demo/make_gallery.py --sources ../shared/data/gallery/sources.tsv --root pkgroot
"""
import argparse
import csv
import re
import shutil
from pathlib import Path

from PIL import Image, ImageOps

SKIP = {"qt-logo.jpg"}  # a logo, not a photo
MAX_SIDE = 640


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sources", required=True)
    ap.add_argument("--root", required=True, help="folder where the packages were unpacked")
    ap.add_argument("--out", default=str(Path(__file__).parent / "gallery"))
    ap.add_argument("--tiers", default="AB")
    args = ap.parse_args(argv)
    import sklearn

    root, out = Path(args.root), Path(args.out)
    rows = list(csv.DictReader(open(args.sources, encoding="utf-8"), delimiter="\t"))
    lines = ["# Gallery photos: sources and licenses", "",
             "Every photo here was taken from the installable package named below, downscaled to at most",
             f"{MAX_SIDE} px on the longer side and re-encoded as JPEG (\"resized\"). Photos under a share-alike",
             "license are kept in `cc-by-sa/` with the license texts in `cc-by-sa/LICENSES/`; the rest are",
             "public domain, CC0 or CC-BY and live in `open/`. The code license of the project does not apply to them.", "",
             "| file | source package | path in package | author | license | changes |", "|---|---|---|---|---|---|"]
    n = 0
    for r in rows:
        if r["tier"] not in args.tiers or Path(r["path_in_package"]).name in SKIP:
            continue
        src = root / r["path_in_package"]
        if r["package"] == "pypi:scikit-learn":
            src = Path(sklearn.__file__).parent.parent / r["path_in_package"]
        if not src.is_file():
            print("missing, skipped:", src)
            continue
        folder = "open" if r["tier"] == "A" else "cc-by-sa"
        pkg = r["package"].replace("pypi:", "")
        name = f"{re.sub('[^a-z0-9]+', '-', pkg.lower())}-{re.sub('[^A-Za-z0-9]+', '-', src.stem).lower()}.jpg"
        im = ImageOps.exif_transpose(Image.open(src))
        changes = ["resized"]
        m = re.search(r"rotate (\d+) deg clockwise", r.get("note") or "")
        if m:
            im = im.rotate(-int(m.group(1)), expand=True)
            changes.insert(0, f"rotated {m.group(1)}° clockwise")
        if im.mode != "RGB":
            im = im.convert("RGB")
        im.thumbnail((MAX_SIDE, MAX_SIDE), Image.LANCZOS)
        (out / folder).mkdir(parents=True, exist_ok=True)
        im.save(out / folder / name, quality=88)
        author = r["author"].replace("|", "/")
        lines.append(f"| {folder}/{name} | {pkg} | {r['path_in_package']} | {author} | {r['license']} | {', '.join(changes)} |")
        n += 1
    lic = out / "cc-by-sa" / "LICENSES"
    lic.mkdir(parents=True, exist_ok=True)
    copyright_file = root / "usr/share/doc/lomiri-wallpapers-16.04/copyright"
    if copyright_file.is_file():  # holds the full CC-BY-SA-3.0 and 4.0 texts
        shutil.copy(copyright_file, lic / "lomiri-wallpapers-copyright.txt")
    for f in ("kphotoalbum",):
        c = root / f"usr/share/doc/{f}/copyright"
        if c.is_file():
            shutil.copy(c, lic / f"{f}-copyright.txt")
    if Path("/usr/share/common-licenses/GPL-2").is_file():
        shutil.copy("/usr/share/common-licenses/GPL-2", lic / "GPL-2.txt")
    lines += ["", f"{n} photos. kphotoalbum's demo photos are CC-BY-SA-4.0 upstream (REUSE metadata) while",
              "Debian's copyright file lists the package as GPL-2+: both texts are in `cc-by-sa/LICENSES/`.",
              "CC-BY-SA-3.0/4.0 full texts: `cc-by-sa/LICENSES/lomiri-wallpapers-copyright.txt`."]
    (out / "ATTRIBUTION.md").write_text("\n".join(lines) + "\n")
    print(f"{n} photos written to {out}")


if __name__ == "__main__":
    main()
