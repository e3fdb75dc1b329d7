"""What the app does, as plain functions over one loaded `Service` (models, gallery, uploads).

Every user mistake raises `UserError` with a one-line message; app.py turns it into gr.Error.
"""
import hashlib
import os
import threading
from pathlib import Path

import numpy as np

from . import checkpoint
from .data import list_images
from .features import ImageError, MAX_PIXELS, get_backbone
from .index import GalleryIndex, update_index
from .query import QueryError, resolve

REPO = Path(__file__).resolve().parent.parent
DEFAULT_GALLERY = REPO / "demo" / "gallery"
MAX_UPLOAD_BYTES = 20 * 1024 * 1024
UPLOAD_FORMATS = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp", "GIF": ".gif", "BMP": ".bmp", "TIFF": ".tif"}


class UserError(ValueError):
    """A message for the person using the app (bad photo, unknown word, empty query...)."""


def data_home():
    return Path(os.environ.get("I2V_HOME", REPO / "user_gallery"))


def whole_number(value, lo, hi, name="k"):
    """`value` as an int in [lo, hi], or a UserError that names it."""
    try:
        v = int(float(value))
    except (TypeError, ValueError, OverflowError):
        raise UserError(f"{name} must be a whole number, got {value!r}") from None
    if not lo <= v <= hi:
        raise UserError(f"{name} must be between {lo} and {hi}, got {v}")
    return v


class Service:
    """Loaded once per process: the models, the gallery index and the user's upload index."""

    def __init__(self, *, model=None, gallery=None, home=None, progress=True):
        self.model_name = model or os.environ.get("I2V_MODEL") or checkpoint.DEFAULT_MODEL
        self.model = checkpoint.load(self.model_name)
        self.net = get_backbone(self.model.config.get("backbone", "efficientnet-lite0"))
        self.home = Path(home or data_home())
        self.uploads_dir = self.home / "uploads"
        self._lock = threading.Lock()
        gallery = gallery or os.environ.get("I2V_GALLERY")
        if gallery:  # a prebuilt index (e.g. of the Flickr8k test photos)
            self.gallery = GalleryIndex.load(gallery)
            if self.gallery.model_name != self.model_name:
                self.model_name = self.gallery.model_name
                self.model = checkpoint.load(self.model_name)
        else:  # the built-in demo gallery, indexed at first start (a few seconds), then kept up to date
            folder = self.home / "demo-index"
            try:
                self.gallery = GalleryIndex.load(folder)
            except (FileNotFoundError, ValueError):
                self.gallery = GalleryIndex(self.model.dim, self.model_name)
            if self.gallery.model_name != self.model_name:
                self.gallery = GalleryIndex(self.model.dim, self.model_name)
            added, removed, _ = update_index(self.gallery, list_images([DEFAULT_GALLERY]), self.model,
                                             progress=progress)
            if added or removed or not (folder / "index.npz").is_file():
                self.gallery.save(folder)
        try:
            self.user = GalleryIndex.load(self.home / "user-index")
        except (FileNotFoundError, ValueError):
            self.user = GalleryIndex(self.model.dim, self.model_name)
        if self.user.model_name != self.model_name:
            self.user = GalleryIndex(self.model.dim, self.model_name)
        # uploads stored before a crash but not yet indexed are indexed now (nothing is lost)
        stored = list_images([self.uploads_dir]) if self.uploads_dir.is_dir() else []
        if set(stored) - set(self.user.paths):
            update_index(self.user, stored, self.model, progress=False, prune=False)
            self.user.save(self.home / "user-index")

    # -- where photos may be served from --------------------------------------------------
    def allowed_dirs(self):
        dirs = {str(Path(p).parent) for p in self.gallery.paths}
        dirs.add(str(self.uploads_dir))
        return sorted(dirs)

    def is_servable(self, path):
        """True only for files of the gallery or the upload store (no ../, no symlinks out)."""
        try:
            real = Path(path).resolve(strict=True)
        except (OSError, RuntimeError):
            return False
        return any(real.is_relative_to(Path(d).resolve()) for d in self.allowed_dirs()) and \
            (str(real) in set(self.gallery.paths) | set(self.user.paths) or real.parent == self.uploads_dir.resolve())

    # -- photo -> code ---------------------------------------------------------------------
    def encode_photo(self, photo, model=None):
        """Code of an uploaded photo (path or PIL image) under `model` (default: the main one)."""
        if photo is None:
            raise UserError("no photo: upload one, paste one or pick an example")
        if isinstance(photo, (str, Path)):
            try:
                if Path(photo).stat().st_size > MAX_UPLOAD_BYTES:
                    raise UserError(f"photo too large (over {MAX_UPLOAD_BYTES // 2**20} MB)")
            except OSError:
                raise UserError("the photo could not be read (file missing)") from None
        try:
            feats, logits = self.net.encode_images([photo])
        except ImageError as e:
            msg = str(e).split(": ", 1)[-1]
            raise UserError(f"this file is not a photo we can read ({msg})") from None
        m = model or self.model
        return m.encode(feats, logits)[0]

    # -- the four actions -----------------------------------------------------------------
    def summarize(self, photo, k=3, model_name=None):
        """{'words': [(word, weight)], 'fit': float, 'evidence': [(path, distance)]}"""
        k = whole_number(k, 1, 8)
        try:
            model = checkpoint.load(model_name) if model_name else self.model
        except KeyError as e:
            raise UserError(str(e.args[0])) from None
        code = self.encode_photo(photo, model)
        words, fit = model.summarize_codes(code[None], k)
        main_code = code if model is self.model else self.encode_photo(photo)
        evidence = self._search(main_code, 6)
        return {"words": words[0], "fit": float(fit[0]), "evidence": evidence}

    def search(self, query, photo=None, k=12):
        """[(path, distance)] of the photos nearest to a word-sum query (optionally photo ± words)."""
        try:
            terms, photo_weight = resolve(query if query is not None else "", self.model.vocab,
                                          allow_photo=photo is not None)
        except QueryError as e:
            if photo is not None and not (query or "").strip():
                terms, photo_weight = [], 1.0
            else:
                raise UserError(str(e)) from None
        q = self.model.word_sum(terms)
        if photo is not None:
            q = q + (photo_weight or 1.0) * self.encode_photo(photo)
        if not np.any(q):
            raise UserError("the words cancel out: nothing left to search for")
        return self._search(q, whole_number(k, 1, 100)), terms

    def _search(self, q, k):
        hits = self.gallery.search(q, k) + self.user.search(q, k)
        return sorted(hits, key=lambda h: h[1])[:k]

    def neighbours(self, word, k=10):
        from .wordvec import compare_neighbours

        if not isinstance(word, str) or not word.strip():
            raise UserError("type a word, e.g. yellow")
        if len(word) > 50 or len(word.split()) > 1:
            raise UserError("type a single word, e.g. yellow")
        k = whole_number(k, 1, 50)
        try:
            return compare_neighbours(self.model, word, k)
        except KeyError as e:
            raise UserError(str(e.args[0])) from None

    def add_photos(self, files):
        """Copy uploads into the content-addressed store and index them. Returns (added, errors)."""
        if not files:
            raise UserError("no files: choose one or more photos")
        from PIL import Image

        self.uploads_dir.mkdir(parents=True, exist_ok=True)
        stored, errors = [], []
        for f in files:
            src = Path(getattr(f, "name", f))
            label = src.name[:80]
            try:
                data = src.read_bytes()
                if len(data) > MAX_UPLOAD_BYTES:
                    raise UserError(f"over {MAX_UPLOAD_BYTES // 2**20} MB")
                with Image.open(src) as im:
                    fmt = im.format
                    if im.width * im.height > MAX_PIXELS:
                        raise UserError("too many pixels")
                if fmt not in UPLOAD_FORMATS:
                    raise UserError(f"unsupported format {fmt}")
            except UserError as e:
                errors.append(f"{label}: {e}")
                continue
            except Exception:
                errors.append(f"{label}: not a readable image")
                continue
            # the stored name comes from the content, never from the uploaded file name
            dest = self.uploads_dir / (hashlib.sha256(data).hexdigest()[:32] + UPLOAD_FORMATS[fmt])
            if not dest.exists():
                tmp = dest.with_suffix(".part")
                tmp.write_bytes(data)
                os.replace(tmp, dest)
            stored.append(str(dest.resolve()))
        added = 0
        if stored:
            with self._lock:
                added, _, errs = update_index(self.user, stored, self.model, progress=False, prune=False)
                errors += [e.split(": ", 1)[-1] for e in errs]
                self.user.save(self.home / "user-index")
        return added, errors

    def counts(self):
        return len(self.gallery), len(self.user)
