"""App state over the workflows of `i2v.pipeline`: one loaded model, the gallery, the visitors' photos.

Two deployment modes (README "Threat model"):

- local (the default: loopback bind): one user; "my photos" persist in $I2V_HOME across restarts.
- public (a Space, a non-loopback bind, --public): each browser session has its own photos,
  invisible to other sessions and deleted when the session ends (or after SESSION_TTL idle).

Photos are stored re-encoded (pixels only: no EXIF/GPS, no original bytes) under a name derived
from their pixels; results are served as thumbnails the app writes into its own folder, never
from the gallery's folders. Every user mistake raises `UserError` with a one-line message.
"""
import hashlib
import os
import shutil
import sys
import threading
import time
from pathlib import Path

from PIL import Image

from . import pipeline
from .atomic import atomic_path
from .data import list_images
from .features import ImageError, read_rgb
from .pipeline import UserError

REPO = Path(__file__).resolve().parent.parent
DEFAULT_GALLERY = REPO / "demo" / "gallery"
MAX_UPLOAD_BYTES = 20 * 1024 * 1024  # one photo file
STORED_SIDE = 1600  # stored photos are re-encoded at most this many pixels on the long side
THUMB_SIDE = 512  # what the app serves
MAX_SESSION_PHOTOS = 100  # public mode: per browser session
MAX_SESSIONS_BYTES = 2 * 1024 ** 3  # public mode: all sessions' stored photos together
SESSION_TTL = 2 * 3600  # public mode: a session idle this long is deleted
LOCAL = "local"  # the owner of the one store of a local install


def data_home():
    return Path(os.environ.get("I2V_HOME", REPO / "user_gallery"))


def _warn(msg):
    print(f"warning: {msg}", file=sys.stderr, flush=True)


def check_size(path, name):
    """UserError for a file over MAX_UPLOAD_BYTES (before anything decodes it); OSError if unreadable."""
    if Path(path).stat().st_size > MAX_UPLOAD_BYTES:
        raise UserError(f"{name} too large (over {MAX_UPLOAD_BYTES // 2**20} MB)")


def reencode(src, max_side=STORED_SIDE):
    """Decode an uploaded file into an upright RGB PIL image of at most `max_side`, or UserError."""
    name = Path(str(src)).name[:80]
    try:
        check_size(src, f"{name}:")
        im = read_rgb(str(src), draft=max_side, keep=max_side)
        im.thumbnail((max_side, max_side), Image.BILINEAR)
        return im
    except ImageError as e:
        raise UserError(f"{name}: {e.reason}") from None
    except OSError:
        raise UserError(f"{name}: the file could not be read") from None


def thumbnail_key(path):
    """Name of a photo's thumbnail: a hash of its path, size and mtime (a changed photo gets a new one)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return hashlib.sha256(f"{os.fsencode(path)!r}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:32]


class PhotoStore:
    """One owner's photos: re-encoded JPEGs in `folder/uploads` and their index in `folder/user-index`."""

    def __init__(self, folder, model, *, progress=False):
        self.folder, self.model = Path(folder).resolve(), model
        self.photos_dir, self.index_dir = self.folder / "uploads", self.folder / "user-index"
        self.index = pipeline.open_index(self.index_dir, model, log=_warn)
        self.used = time.time()
        # photos stored before a crash (or a model change) but not yet indexed are indexed now
        stored = list_images([self.photos_dir]) if self.photos_dir.is_dir() else []
        if set(stored) != set(self.index.paths) or not (self.index_dir / "index.npz").is_file():
            pipeline.sync_index(self.index, stored, model, progress=progress, use_cache=False)
            self.index.save(self.index_dir)

    def __len__(self):
        return len(self.index)

    def add(self, files, limit=None):
        """Store and index uploads. Returns (added, already, errors) with errors "name: reason"."""
        new, already, errors = [], 0, []
        for f in files:
            src = Path(getattr(f, "name", f))
            try:
                im = reencode(src)
            except UserError as e:
                errors.append(str(e))
                continue
            # the stored name comes from the pixels, never from the uploaded file name
            dest = self.photos_dir / (hashlib.sha256(im.tobytes()).hexdigest()[:32] + ".jpg")
            if str(dest) in self.index.paths or str(dest) in new:
                already += 1
                continue
            if limit is not None and len(self) + len(new) >= limit:
                errors.append(f"{src.name[:80]}: the store is full ({limit} photos); delete some first")
                continue
            with atomic_path(dest) as tmp:
                im.save(tmp, "JPEG", quality=90)
            new.append(str(dest))
        if new:
            added, _, errs = pipeline.sync_index(self.index, self.index.paths + new, self.model, progress=False,
                                                 use_cache=False)
            errors += errs
            self.index.save(self.index_dir)
        return len(new), already, errors

    def delete(self, paths=None):
        """Delete some stored photos (None: all). Returns how many were deleted."""
        chosen = None if paths is None else set(paths)
        gone = [p for p in self.index.paths if chosen is None or p in chosen]
        for p in gone:
            Path(p).unlink(missing_ok=True)
        if gone:
            kept = [p for p in self.index.paths if p not in set(gone)]
            pipeline.sync_index(self.index, kept, self.model, progress=False, use_cache=False)
            self.index.save(self.index_dir)
        return len(gone)


class Service:
    """Loaded once per process: the model, the gallery index and the photo stores."""

    def __init__(self, *, model=None, gallery=None, home=None, public=False, progress=True):
        self.home, self.public = Path(home or data_home()), bool(public)
        self.thumbs_dir = self.home / "thumbs"
        self._lock = threading.Lock()
        gallery = gallery or os.environ.get("I2V_GALLERY")
        self.gallery = None
        if gallery:  # a prebuilt index (e.g. of the Flickr8k test photos) and the model it was built with
            try:
                self.gallery, self.model = pipeline.load_index(gallery, model)
            except UserError as e:
                _warn(f"{e}; serving the built-in demo gallery instead")
        if self.gallery is None:  # the built-in demo gallery, indexed at first start, then kept up to date
            self.model = pipeline.load_model(model)
            folder = self.home / "demo-index"
            self.gallery = pipeline.open_index(folder, self.model, log=_warn)
            added, removed, _ = pipeline.sync_index(self.gallery, list_images([DEFAULT_GALLERY]), self.model,
                                                    progress=progress)
            if added or removed or not (folder / "index.npz").is_file():
                self.gallery.save(folder)
        self.model_name = self.model.name
        self.stores = {}
        if self.public:  # sessions of a previous run are gone with their browsers
            shutil.rmtree(self.home / "sessions", ignore_errors=True)
        else:
            self.stores[LOCAL] = PhotoStore(self.home, self.model, progress=progress)

    def warm_up(self, photo=None):
        """Load everything a first request needs (the network, the index, GloVe, the plotting
        library) before the app reports ready, so the first answer is as fast as the next."""
        from .plots import neighbour_map

        photo = photo or next(iter(sorted(DEFAULT_GALLERY.glob("*/*.jpg"))), None)
        if photo is not None:
            self.summarize(str(photo), 3)
        self.search("dog", None, 1)
        neighbour_map(self.model, self.neighbours("dog", 3))

    def allowed_dirs(self):
        """The only folder the app serves files from: its own thumbnails."""
        self.thumbs_dir.mkdir(parents=True, exist_ok=True)
        return [str(self.thumbs_dir)]

    # -- visitors' photos ------------------------------------------------------------------
    def _owner(self, session):
        """LOCAL in local mode; in public mode a folder-safe name for the session (None: no session)."""
        if not self.public:
            return LOCAL
        if not session or not isinstance(session, str) or len(session) > 128:
            return None
        return hashlib.sha256(session.encode("utf-8", "surrogateescape")).hexdigest()[:32]

    def store(self, session=None, create=False):
        """The photo store of `session` (local mode: the one store); None if it has none yet."""
        owner = self._owner(session)
        if owner is None:
            if create:
                raise UserError("no browser session: reload the page")
            return None
        with self._lock:
            s = self.stores.get(owner)
            if s is None and create:
                self._expire()
                s = self.stores[owner] = PhotoStore(self.home / "sessions" / owner, self.model)
            if s is not None:
                s.used = time.time()
            return s

    def _expire(self):
        for owner, s in list(self.stores.items()):
            if owner != LOCAL and time.time() - s.used > SESSION_TTL:
                self._drop(owner)

    def _drop(self, owner):
        self.stores.pop(owner, None)
        shutil.rmtree(self.home / "sessions" / owner, ignore_errors=True)

    def end_session(self, session):
        """Public mode: delete a session's photos when its browser goes away."""
        owner = self._owner(session)
        if self.public and owner:
            with self._lock:
                if owner in self.stores:
                    self._drop(owner)

    def _sessions_bytes(self):
        root = self.home / "sessions"
        return sum(f.stat().st_size for f in root.rglob("*") if f.is_file()) if root.is_dir() else 0

    def add_photos(self, files, session=None):
        """Store and index uploads for `session`. Returns (added, already, errors)."""
        if not files:
            raise UserError("no files: choose one or more photos")
        limit = None
        if self.public:
            limit = MAX_SESSION_PHOTOS
            if self._sessions_bytes() > MAX_SESSIONS_BYTES:
                raise UserError("the server's photo store is full; try again later")
        s = self.store(session, create=True)
        with self._lock:
            return s.add(files, limit=limit)

    def delete_photos(self, ids=None, session=None):
        """Delete the visitor's photos by id (see `my_photos`); None deletes them all."""
        s = self.store(session)
        if s is None:
            return 0
        with self._lock:
            if ids is None:
                return s.delete()
            wanted = set(ids)
            paths = [p for p in s.index.paths if Path(p).stem in wanted]
            return s.delete(paths) if paths else 0

    def my_photos(self, session=None):
        """[(thumbnail path, id)] of the visitor's photos, newest last."""
        s = self.store(session)
        return [] if s is None else [(self.thumbnail(p), Path(p).stem) for p in s.index.paths]

    def counts(self, session=None):
        s = self.store(session)
        return len(self.gallery), 0 if s is None else len(s)

    # -- the actions -------------------------------------------------------------------------
    def _photo(self, photo):
        """Upload safety before decoding: a size cap on files."""
        if isinstance(photo, (str, Path)):
            try:
                check_size(photo, "photo")
            except OSError:
                raise UserError("the photo could not be read (file missing)") from None
        return photo

    def summarize(self, photo, k=3, model_name=None, session=None):
        """{'words': [(word, weight)], 'fit': float, 'evidence': [(thumbnail, distance)]}"""
        k = pipeline.check_k(k, "summarize")
        model = pipeline.load_model(model_name) if model_name else self.model
        outputs = pipeline.read_photo(self._photo(photo), model.backbone)
        code = model.encode(*outputs)[0]
        res = pipeline.summarize(model, code, k)
        if model is not self.model:  # the gallery holds codes of the app's model
            if self.model.backbone != model.backbone:
                outputs = pipeline.read_photo(photo, self.model.backbone)
            code = self.model.encode(*outputs)[0]
        res["evidence"] = self._search(code, 6, session)
        return res

    def search(self, query, photo=None, k=12, session=None):
        """([(thumbnail, distance)], terms, photo_weight) of the photos nearest to a query."""
        k = pipeline.check_k(k, "search")
        q, terms, photo_weight = pipeline.query_vector(self.model, query, None if photo is None else self._photo(photo))
        return self._search(q, k, session), terms, photo_weight

    def _search(self, q, k, session):
        s = self.store(session)
        hits = pipeline.search([self.gallery] + ([s.index] if s is not None else []), q, k)
        served = [(self.thumbnail(p), d) for p, d in hits]
        return [(t, d) for t, d in served if t is not None]  # a photo gone since indexing is left out

    def neighbours(self, word, k=10):
        return pipeline.neighbours(self.model, word, k)

    # -- what is served ----------------------------------------------------------------------
    def thumbnail(self, path):
        """A re-encoded copy (JPEG, at most THUMB_SIDE, no metadata) of an indexed photo in the
        app's own folder: the only kind of file the app serves."""
        key = thumbnail_key(path)
        if key is None:
            return None
        dest = self.thumbs_dir / f"{key}.jpg"
        if not dest.is_file():
            try:
                im = reencode(path, THUMB_SIDE)
            except UserError:
                return None
            with atomic_path(dest) as tmp:
                im.save(tmp, "JPEG", quality=85)
        return str(dest)
