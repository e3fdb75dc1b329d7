"""FAISS index of image codes (L2): build, update incrementally, search, save/load atomically.

By default codes and queries are scaled to unit length before the L2 search: on photos unlike
the training set it stops low-norm "hub" photos (coffee, citrus slices) from coming up for
every query. In domain raw L2 is better (Flickr8k test R@1 17.7 vs 14.5 %): `normalize=False`.

An index folder holds one file, `index.npz` (numpy, no pickle): the codes, the table of
paths/sizes/mtimes, the serialized FAISS index (approximate indexes only) and a JSON header.
Saves write a temp file and rename it, so a crash mid-save leaves the previous index.
"""
import json
import os
import time
import zipfile
from pathlib import Path

import numpy as np

from .atomic import atomic_path
from .models import normalize_rows

APPROX_THRESHOLD = 50_000  # above this many codes: IVF (approximate); exact search takes ~7 ms at 100k here
INDEX_FILE = "index.npz"


def build_faiss(codes, *, exact=None, nlist=None, nprobe=None, seed=0):
    """A FAISS L2 index over `codes` (n, d): flat (exact) when small, else IVF-Flat.

    nlist defaults to 4 sqrt(n); nprobe to nlist / 16, which gave recall@10 >= 0.95 against
    exact search on synthetic codes (see benchmarks/)."""
    import faiss

    codes = np.ascontiguousarray(codes, dtype=np.float32)
    n, d = codes.shape
    if exact is None:
        exact = n <= APPROX_THRESHOLD
    if exact:
        index = faiss.IndexFlatL2(d)
    else:
        nlist = nlist or int(4 * np.sqrt(n))
        index = faiss.IndexIVFFlat(faiss.IndexFlatL2(d), d, nlist)
        rng = np.random.default_rng(seed)
        sample = codes[rng.choice(n, min(n, 64 * nlist), replace=False)]
        index.train(sample)
        index.nprobe = nprobe or max(1, nlist // 16)
    if n:
        index.add(codes)
    return index


class GalleryIndex:
    """Codes of a photo collection with their file table. `search(q, k) -> [(path, dist)]`.

    `load` returns a `i2v.compressed.CompressedIndex` for a folder holding a compressed index.
    """

    compressed = False

    def __init__(self, dim, model_name, codes=None, paths=(), sizes=(), mtimes=(), faiss_index=None, normalize=True):
        self.dim, self.model_name, self.normalize = int(dim), model_name, bool(normalize)
        self.fingerprint = None  # of the model whose codes these are
        self.codes = np.zeros((0, dim), np.float32) if codes is None else self._prep(codes)
        self.paths, self.sizes, self.mtimes = list(paths), list(sizes), list(mtimes)
        self._faiss = faiss_index

    def __len__(self):
        return len(self.paths)

    def _prep(self, a):
        a = np.asarray(a, np.float32)
        return normalize_rows(a) if self.normalize else a

    @property
    def faiss(self):
        if self._faiss is None or self._faiss.ntotal != len(self.codes):
            self._faiss = build_faiss(self.codes)
        return self._faiss

    def set(self, codes, paths, sizes, mtimes):
        self.codes = self._prep(np.asarray(codes, np.float32).reshape(-1, self.dim))
        self.paths, self.sizes, self.mtimes = list(paths), list(sizes), list(mtimes)
        self._faiss = None

    def search(self, queries, k=10):
        """Nearest photos of each query (L2).

        Parameters
        ----------
        queries : (d,) or (n, d) array.

        Returns
        -------
        list (n) of lists of (path, distance) nearest first; a single list for a (d,) query.
        """
        rows = self.search_rows(queries, k)
        single = np.asarray(queries).ndim == 1
        out = [[(self.paths[j], d) for j, d in hits] for hits in ([rows] if single else rows)]
        return out[0] if single else out

    def search_rows(self, queries, k=10):
        """Like `search`, with row numbers (into `codes`, `paths`) instead of paths."""
        q = np.asarray(queries, np.float32)
        single = q.ndim == 1
        q = np.atleast_2d(q)
        if q.shape[1] != self.dim:
            raise ValueError(f"query has dimension {q.shape[1]}, the index {self.dim}")
        if not len(self):
            return [] if single else [[] for _ in q]
        k = max(1, min(int(k), len(self)))
        dist, idx = self.faiss.search(np.ascontiguousarray(self._prep(q)), k)
        out = [[(int(j), float(np.sqrt(max(dd, 0.0)))) for dd, j in zip(drow, irow) if j >= 0]
               for drow, irow in zip(dist, idx)]
        return out[0] if single else out

    def code_of(self, path):
        return self.codes[self.paths.index(path)]

    def path_of(self, row):
        return self.paths[row]

    def code_of_row(self, row):
        return self.codes[row]

    # -- disk --------------------------------------------------------------------------------
    def save(self, folder):
        """Write `folder/index.npz` atomically."""
        import faiss

        folder = Path(folder)
        header = {"dim": self.dim, "model": self.model_name, "count": len(self), "saved": time.time(),
                  "normalize": self.normalize, "fingerprint": self.fingerprint,
                  "exact": len(self) <= APPROX_THRESHOLD}
        arrays = dict(codes=self.codes, paths=np.array(self.paths, dtype=str).reshape(-1),
                      sizes=np.array(self.sizes, dtype=np.int64), mtimes=np.array(self.mtimes, dtype=np.int64),
                      header=np.array(json.dumps(header)))
        if not header["exact"]:
            arrays["faiss"] = faiss.serialize_index(self.faiss)
        with atomic_path(folder / INDEX_FILE) as tmp:
            np.savez(tmp, **arrays)

    @staticmethod
    def header(folder):
        """The header of the index in `folder` (kind, model, dim...) without loading its codes;
        None when there is none or it cannot be read."""
        try:
            with np.load(Path(folder) / INDEX_FILE, allow_pickle=False) as z:
                header = json.loads(str(z["header"]))
        except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile):
            return None
        return header if isinstance(header, dict) else None

    @classmethod
    def load(cls, folder):
        import faiss

        path = Path(folder) / INDEX_FILE
        if not path.is_file():
            raise FileNotFoundError(f"no index at {folder}: build one with `python -m i2v index DIR --out {folder}`")
        try:
            with np.load(path, allow_pickle=False) as z:
                header = json.loads(str(z["header"]))
                if not isinstance(header, dict) or not isinstance(header.get("dim"), int) or header["dim"] < 1:
                    raise ValueError("header: expected an object with a positive 'dim'")
                if header.get("kind") == "compressed":  # a large collection (see i2v.compressed)
                    from .compressed import CompressedIndex

                    return CompressedIndex.load(folder, header)
                codes, paths = z["codes"], z["paths"].tolist()
                sizes, mtimes = z["sizes"].tolist(), z["mtimes"].tolist()
                if codes.ndim != 2 or codes.shape != (len(paths), header["dim"]) or not \
                        len(paths) == len(sizes) == len(mtimes):
                    raise ValueError(f"codes {codes.shape} do not match {len(paths)} paths of dimension {header['dim']}")
                fi = faiss.deserialize_index(z["faiss"]) if "faiss" in z.files else None
        except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile, RuntimeError,
                MemoryError) as e:
            raise ValueError(f"broken index file {path}: {e}") from None
        index = cls(header["dim"], header.get("model"), codes, paths, sizes, mtimes, fi, header.get("normalize", True))
        index.fingerprint = header.get("fingerprint")
        return index

    def is_current(self, model, normalize):
        """The one staleness rule for a whole index: codes of this very model, same distance."""
        return self.fingerprint == model.fingerprint and self.dim == model.dim and self.normalize == bool(normalize)


def stat_files(paths):
    """(size, mtime_ns) of each file, None where it cannot be read."""
    out = []
    for p in paths:
        try:
            st = os.stat(p)
            out.append((st.st_size, st.st_mtime_ns))
        except OSError:
            out.append(None)
    return out
