"""App state over the workflows of `i2v.pipeline`: one loaded model, the gallery, the user's uploads.

Every user mistake raises `UserError` with a one-line message; app.py turns it into gr.Error.
"""
import hashlib
import os
import threading
from pathlib import Path

from . import pipeline
from .atomic import write_bytes
from .data import list_images
from .features import MAX_PIXELS
from .pipeline import UserError

REPO = Path(__file__).resolve().parent.parent
DEFAULT_GALLERY = REPO / "demo" / "gallery"
MAX_UPLOAD_BYTES = 20 * 1024 * 1024
UPLOAD_FORMATS = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp", "GIF": ".gif", "BMP": ".bmp", "TIFF": ".tif"}


def data_home():
    return Path(os.environ.get("I2V_HOME", REPO / "user_gallery"))


class Service:
    """Loaded once per process: the model, the gallery index and the user's upload index."""

    def __init__(self, *, model=None, gallery=None, home=None, progress=True):
        self.home = Path(home or data_home())
        self.uploads_dir = self.home / "uploads"
        self._lock = threading.Lock()
        gallery = gallery or os.environ.get("I2V_GALLERY")
        if gallery:  # a prebuilt index (e.g. of the Flickr8k test photos) and the model it was built with
            self.gallery, self.model = pipeline.load_index(gallery, model)
        else:  # the built-in demo gallery, indexed at first start (a few seconds), then kept up to date
            self.model = pipeline.load_model(model)
            folder = self.home / "demo-index"
            self.gallery = pipeline.open_index(folder, self.model)
            added, removed, _ = pipeline.sync_index(self.gallery, list_images([DEFAULT_GALLERY]), self.model,
                                                    progress=progress)
            if added or removed or not (folder / "index.npz").is_file():
                self.gallery.save(folder)
        self.model_name = self.model.name
        # uploads stored before a crash (or a model change) but not yet indexed are indexed now
        self.user = pipeline.open_index(self.home / "user-index", self.model)
        stored = list_images([self.uploads_dir]) if self.uploads_dir.is_dir() else []
        if set(stored) - set(self.user.paths) or not (self.home / "user-index" / "index.npz").is_file():
            pipeline.sync_index(self.user, stored, self.model, progress=False, prune=False)
            self.user.save(self.home / "user-index")

    def allowed_dirs(self):
        """Folders the app may serve photos from: those of the gallery's photos and the upload store."""
        dirs = {str(Path(p).parent) for p in self.gallery.paths}
        dirs.add(str(self.uploads_dir))
        return sorted(dirs)

    def _model(self, name):
        return pipeline.load_model(name) if name else self.model

    def _photo(self, photo):
        """Upload safety before decoding: a size cap on files."""
        if isinstance(photo, (str, Path)):
            try:
                if Path(photo).stat().st_size > MAX_UPLOAD_BYTES:
                    raise UserError(f"photo too large (over {MAX_UPLOAD_BYTES // 2**20} MB)")
            except OSError:
                raise UserError("the photo could not be read (file missing)") from None
        return photo

    # -- the four actions -----------------------------------------------------------------
    def summarize(self, photo, k=3, model_name=None):
        """{'words': [(word, weight)], 'fit': float, 'evidence': [(path, distance)]}"""
        k = pipeline.check_k(k, "summarize")
        model = self._model(model_name)
        outputs = pipeline.read_photo(self._photo(photo), model.backbone)
        res = pipeline.summarize(model, model.encode(*outputs)[0], k)
        if self.model.backbone != model.backbone:
            outputs = pipeline.read_photo(photo, self.model.backbone)
        res["evidence"] = self._search(self.model.encode(*outputs)[0], 6)
        return res

    def search(self, query, photo=None, k=12):
        """([(path, distance)], terms, photo_weight) of the photos nearest to a query."""
        k = pipeline.check_k(k, "search")
        q, terms, photo_weight = pipeline.query_vector(self.model, query, None if photo is None else self._photo(photo))
        return self._search(q, k), terms, photo_weight

    def _search(self, q, k):
        return pipeline.search([self.gallery, self.user], q, k)

    def neighbours(self, word, k=10):
        return pipeline.neighbours(self.model, word, k)

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
                write_bytes(dest, data)
            stored.append(str(dest.resolve()))
        added = 0
        if stored:
            with self._lock:
                added, _, errs = pipeline.sync_index(self.user, stored, self.model, progress=False, prune=False)
                errors += [e.split(": ", 1)[-1] for e in errs]
                self.user.save(self.home / "user-index")
        return added, errors

    def counts(self):
        return len(self.gallery), len(self.user)
