"""A compressed index for large collections: IVF-PQ in memory, exact re-ranking from disk.

FAISS IVF-PQ (32 bytes per code) proposes `SHORTLIST` candidates; their float16 codes, read
from a memory-mapped file, re-rank them exactly. Measured on codes of real photos (Flickr8k's
codes and perturbed copies, `benchmarks/scale.py`): recall@10 0.996 at 10M codes against exact
search (PQ alone: 0.3-0.5), p50 4.2 ms on one thread; RAM ~41 bytes per photo (the IVF-PQ
index) plus the pages of the on-disk files the OS keeps.

Folder layout: `index.npz` (header + file names: the commit record, written last and
atomically), `ivfpq-<gen>.faiss`, `codes-<gen>.f16` (n x d float16), `paths-<gen>.bin` (UTF-8,
one per line, surrogate-escaped) and `paths-<gen>.idx` (int64 line offsets). A build writes a
new generation, then the record; readers never see a half-written index.
"""
import json
import os
import time
from pathlib import Path

import numpy as np

from .atomic import atomic_path
from .models import normalize_rows

SHORTLIST = 1000  # candidates re-ranked exactly per query (100 gave recall@10 0.58 at 10M, 1000 gives 0.996)
PQ_BYTES = 32
INDEX_FILE = "index.npz"


def build_compressed(shards, folder, *, dim, model_name, fingerprint=None, normalize=True, nlist=None,
                     train_size=200_000, expected=None, log=None):
    """Build a CompressedIndex in `folder` from an iterable of (paths, codes (m, dim)) shards.

    The first shards, up to `train_size` codes, train the quantizers; then every shard is added
    and written out as it comes, so all float32 codes are never held at once. `expected`: the
    total count if known (sets the number of lists, default 4 sqrt(n), at least 1).
    """
    import faiss

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    gen = f"{int(time.time() * 1000):x}-{os.getpid()}"
    names = {k: f"{k}-{gen}{ext}" for k, ext in (("ivfpq", ".faiss"), ("codes", ".f16"), ("paths", ".bin"),
                                                  ("offsets", ".idx"))}
    shards = iter(shards)
    head, held = [], 0
    for paths, codes in shards:  # the training sample: the first shards
        head.append((list(paths), _prep(codes, dim, normalize)))
        held += len(head[-1][0])
        if held >= train_size:
            break
    if not held:
        raise ValueError("no codes to index")
    sample = np.concatenate([c for _, c in head])
    head = [(paths, len(c)) for paths, c in head]  # the codes live on in `sample` only (not twice)
    nlist = nlist or max(1, min(int(4 * np.sqrt(expected or held)), len(sample) // 39))
    m = max(k for k in range(1, min(PQ_BYTES, dim) + 1) if dim % k == 0)  # sub-quantizers: a divisor of dim
    nbits = int(np.clip(np.log2(max(len(sample) // 39, 2)), 1, 8))  # 8 bits need ~10k training codes
    index = faiss.index_factory(dim, f"IVF{nlist},PQ{m}x{nbits}")
    index.train(sample)
    count = 0
    with open(folder / names["codes"], "wb") as fc, open(folder / names["paths"], "wb") as fp, \
            open(folder / names["offsets"], "wb") as fo:
        offset = 0

        def add(paths, codes):
            nonlocal count, offset
            index.add(codes)
            fc.write(codes.astype(np.float16).tobytes())
            lines = [os.fsencode(p).replace(b"\n", b"?") + b"\n" for p in paths]
            fo.write((offset + np.cumsum([0] + [len(ln) for ln in lines])[:-1]).astype(np.int64).tobytes())
            fp.write(b"".join(lines))
            offset += sum(len(ln) for ln in lines)
            count += len(paths)

        at = 0
        for paths, m in head:
            add(paths, sample[at:at + m])
            at += m
        del head, sample
        for paths, codes in shards:
            add(list(paths), _prep(codes, dim, normalize))
            if log:
                log(f"{count} codes added")
        for f in (fc, fp, fo):
            f.flush()
            os.fsync(f.fileno())
    with atomic_path(folder / names["ivfpq"]) as tmp:
        faiss.write_index(index, str(tmp))
    header = {"kind": "compressed", "dim": dim, "model": model_name, "fingerprint": fingerprint,
              "normalize": bool(normalize), "count": count, "nlist": nlist, "nprobe": _nprobe(nlist, count),
              "pq": f"{m}x{nbits}",
              "files": names, "saved": time.time()}
    with atomic_path(folder / INDEX_FILE) as tmp:  # the commit record
        np.savez(tmp, header=np.array(json.dumps(header)))
    for f in folder.iterdir():  # older generations
        if f.name != INDEX_FILE and not f.name.startswith(".") and f.name not in names.values() and \
                f.name.split("-")[0] in names:
            f.unlink(missing_ok=True)
    return CompressedIndex.load(folder)


def _nprobe(nlist, n):
    """Lists probed a query: 1/64 of them (chosen at 1M and 10M codes, `benchmarks/scale.py`), and
    at least enough to hold about twice the shortlist (small collections: all, so exact)."""
    return int(min(nlist, max(1, nlist // 64, -(-2 * SHORTLIST * nlist // max(n, 1)))))


def _prep(codes, dim, normalize):
    a = np.ascontiguousarray(np.asarray(codes, np.float32).reshape(-1, dim))
    return normalize_rows(a) if normalize else a


class CompressedIndex:
    """Search-only view of a compressed index (see the module docstring): `search`, `search_rows`,
    `path_of`, `code_of_row`, `is_current` like GalleryIndex."""

    compressed = True

    def __init__(self, header, index, codes, paths_blob, offsets):
        self.header, self._index = header, index
        self.dim, self.model_name = header["dim"], header.get("model")
        self.fingerprint, self.normalize = header.get("fingerprint"), header.get("normalize", True)
        self._codes, self._blob, self._offsets = codes, paths_blob, offsets

    def __len__(self):
        return int(self.header["count"])

    @classmethod
    def load(cls, folder, header=None):
        import faiss

        folder = Path(folder)
        if header is None:
            with np.load(folder / INDEX_FILE, allow_pickle=False) as z:
                header = json.loads(str(z["header"]))
        files, n, d = header["files"], int(header["count"]), int(header["dim"])
        index = faiss.read_index(str(folder / files["ivfpq"]))
        if index.ntotal != n or index.d != d:
            raise ValueError(f"{files['ivfpq']} holds {index.ntotal} codes of dimension {index.d}, the header {n} of {d}")
        faiss.extract_index_ivf(index).nprobe = int(header.get("nprobe", 1))
        codes = np.memmap(folder / files["codes"], dtype=np.float16, mode="r", shape=(n, d))
        offsets = np.memmap(folder / files["offsets"], dtype=np.int64, mode="r", shape=(n,))
        blob = np.memmap(folder / files["paths"], dtype=np.uint8, mode="r")
        return cls(header, index, codes, blob, offsets)

    def path_of(self, row):
        end = self._offsets[row + 1] if row + 1 < len(self) else len(self._blob)
        return os.fsdecode(bytes(self._blob[self._offsets[row]:end - 1]))

    def code_of_row(self, row):
        return np.asarray(self._codes[row], np.float32)

    def search_rows(self, queries, k=10):
        """Nearest rows of each query: [(row, distance)] (a list of them for (n, d) queries)."""
        q = np.atleast_2d(np.asarray(queries, np.float32))
        single = np.asarray(queries).ndim == 1
        if q.shape[1] != self.dim:
            raise ValueError(f"query has dimension {q.shape[1]}, the index {self.dim}")
        q = normalize_rows(q) if self.normalize else q
        k = max(1, min(int(k), len(self)))
        _, cand = self._index.search(np.ascontiguousarray(q), max(SHORTLIST, k))
        out = []
        for qi, rows in zip(q, cand):
            rows = np.sort(rows[rows >= 0])
            d = np.sqrt(((np.asarray(self._codes[rows], np.float32) - qi) ** 2).sum(1))
            order = np.argsort(d, kind="stable")[:k]
            out.append([(int(rows[j]), float(d[j])) for j in order])
        return out[0] if single else out

    def search(self, queries, k=10):
        rows = self.search_rows(queries, k)
        single = np.asarray(queries).ndim == 1
        out = [[(self.path_of(r), d) for r, d in hits] for hits in ([rows] if single else rows)]
        return out[0] if single else out

    def is_current(self, model, normalize):
        return self.fingerprint == model.fingerprint and self.dim == model.dim and self.normalize == bool(normalize)
