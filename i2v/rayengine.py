"""Encode photo files to codes on a Ray cluster (local, or `ray start --head` and `--address`).

The file list is a Ray dataset; an actor pool (one ONNX session and one model per actor)
decodes, runs the backbone and the model's encoder in batches, the same functions the local
engine runs (`features.load_image`, `Backbone.forward`, `Image2Vec.encode`), and writes Parquet
shards of (path, size, mtime, code, error) into a run folder. Shards already written by an
earlier, interrupted run are read first: only the rest is encoded. A file that cannot be read
is listed with its reason, never aborts the job; a worker that dies is restarted and its batch
retried (`max_restarts`, `max_task_retries`). Paths may be local or any URI pyarrow's
filesystems read (`s3://bucket/photos/a.jpg`, `gs://...`, `hdfs://...`, `file:///...`).

For large collections the shards are the store of codes: `iter_codes` streams the current ones
shard by shard (a compressed index is filled from it) without holding them all.
"""
import contextlib
import io
import os
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

SHARDS = "ray-shards"
MAX_ROWS_PER_FILE = 4096  # Parquet files of up to this many photos (~4 MB): few files at 10M photos


def is_uri(path):
    """True for a pyarrow filesystem URI (`s3://...`, `file:///...`), False for a local path."""
    return "://" in str(path)


class _Reader:
    """Opens local paths or filesystem URIs (one pyarrow filesystem per scheme and host, reused)."""

    BUCKETS = ("s3", "gs", "gcs")  # URIs whose host is the bucket: part of the filesystem path

    def __init__(self):
        self.fs = {}

    def __call__(self, path):
        if not is_uri(path):
            return path
        from urllib.parse import unquote, urlsplit

        import pyarrow.fs

        u = urlsplit(path)
        if (u.scheme, u.netloc) not in self.fs:
            self.fs[u.scheme, u.netloc] = pyarrow.fs.FileSystem.from_uri(path)[0]
        inner = unquote(u.netloc + u.path if u.scheme in self.BUCKETS else u.path)
        with self.fs[u.scheme, u.netloc].open_input_file(inner) as f:
            return io.BytesIO(f.read())


class EncodeBatch:
    """A Ray Data actor: photos -> codes, one model and one backbone session per actor."""

    def __init__(self, model_path, threads=1):
        from . import checkpoint
        from .features import Backbone

        self.model = checkpoint.load(model_path)
        self.net = Backbone(self.model.backbone, threads=threads)
        self.size = self.net.cfg["size"]
        self.open = _Reader()
        # photos are decoded on two threads (PIL releases the GIL), as the local engine does
        self.decoder = ThreadPoolExecutor(max_workers=2)

    def _decode(self, path):
        """(pixels or None, error)"""
        from .features import ImageError, load_image

        try:
            return load_image(self.open(path), self.size), ""
        except ImageError as e:
            return None, e.reason
        except OSError as e:  # a remote file gone or unreadable
            return None, f"cannot read file ({e})"

    def __call__(self, batch, step=4):
        paths = [str(p) for p in batch["path"]]
        pending = [self.decoder.submit(self._decode, p) for p in paths]
        codes, errors = np.zeros((len(paths), self.model.dim), np.float32), []
        # the network runs on every `step` photos as soon as they are decoded, while the decoding
        # threads go on with the rest (measured: 4 at a time 249 photos/s, the whole batch 208)
        for s in range(0, len(paths), step):
            part = [f.result() for f in pending[s:s + step]]
            errors += [e for _, e in part]
            good = [i for i, (a, _) in enumerate(part) if a is not None]
            if good:
                feats, logits = self.net.forward(np.stack([part[i][0] for i in good]))
                codes[[s + i for i in good]] = self.model.encode(feats, logits)
        return {"path": np.array(paths, dtype=object), "size": batch["size"], "mtime": batch["mtime"],
                "code": list(codes), "error": np.array(errors, dtype=object)}


def list_uri(uri):
    """Image files under a pyarrow filesystem URI (recursive): [(uri, size, mtime_ns)], sorted."""
    import pyarrow.fs

    from .data import IMAGE_EXTENSIONS

    fs, root = pyarrow.fs.FileSystem.from_uri(uri)
    info = fs.get_file_info(root)
    if info.type == pyarrow.fs.FileType.NotFound:
        raise FileNotFoundError("no such folder or file")
    if info.type == pyarrow.fs.FileType.File:
        return [(uri, int(info.size), int(info.mtime_ns or 0))]
    base = uri.rstrip("/") + "/"  # each file's URI: the one given + its path below it (scheme and host kept)
    infos = fs.get_file_info(pyarrow.fs.FileSelector(root, recursive=True))
    return sorted((base + i.path[len(root.rstrip("/")):].lstrip("/"), int(i.size), int(i.mtime_ns or 0))
                  for i in infos if i.type == pyarrow.fs.FileType.File
                  and i.base_name.lower().endswith(IMAGE_EXTENSIONS) and not i.base_name.startswith("."))


def _hashes(paths, sizes, mtimes):
    """int64 keys of (path, size, mtime) rows (this process's string hash: compare within one run)."""
    return np.fromiter((hash((str(p), int(s), int(m))) for p, s, m in zip(paths, sizes, mtimes)), np.int64,
                       count=len(paths))


def _keys(table):
    """int64 keys of a shard table's rows (see `_hashes`)."""
    return _hashes(table["path"].to_pylist(), table["size"].to_numpy(), table["mtime"].to_numpy())


def _shards(folder, columns=("path", "size", "mtime", "error")):
    """(file, table of `columns`, None: all) of each readable shard under `folder` (a torn one,
    e.g. by a kill, is skipped: its photos are encoded again)."""
    import pyarrow.parquet as pq

    for f in sorted(Path(folder).rglob("*.parquet")) if Path(folder).is_dir() else []:
        try:
            yield f, pq.read_table(f, columns=None if columns is None else list(columns))
        except Exception:  # noqa: BLE001 - a torn shard is redone, whatever pyarrow says about it
            continue


def read_shards(folder):
    """{(path, size, mtime): (code or None, error)} from the Parquet shards under `folder`
    (small collections: every code in memory; `iter_codes` streams large ones)."""
    done = {}
    for _, table in _shards(folder, columns=None):  # each shard read once, whole
        t = table.to_pydict()
        for p, s, m, c, e in zip(t["path"], t["size"], t["mtime"], t["code"], t["error"]):
            done[(p, int(s), int(m))] = (None if e else np.asarray(c, np.float32), e)
    return done


def encode_files(files, model_path, folder, *, address=None, workers=2, batch_size=32, collect=True, log=None):
    """Encode those of `files` [(path, size, mtime)] not in the shards in `folder` yet, via Ray.

    Returns {(path, size, mtime): (code or None, error)} for every file encoded (from earlier
    shards where present) with collect=True; with collect=False only the number encoded now
    (large collections: read the codes with `iter_codes`). `address`: None starts a local
    cluster; "auto" or "ray://..." joins one.
    """
    folder = Path(folder)
    done = np.concatenate([np.zeros(0, np.int64)] + [_keys(t) for _, t in _shards(folder)])
    files = [tuple(f) for f in files]
    todo = [f for f, d in zip(files, np.isin(_hashes(*zip(*files)) if files else [], done)) if not d]
    if log:
        log(f"ray: {len(files) - len(todo)} photos already encoded in {folder}, {len(todo)} to encode")
    if todo:
        _run(todo, model_path, folder, address=address, workers=workers, batch_size=batch_size)
    if not collect:
        return len(todo)
    got = read_shards(folder)
    return {f: got[f] for f in files if f in got}


def _run(todo, model_path, folder, *, address, workers, batch_size):
    import logging

    # Ray Data's own logging as shipped, but only errors on the console (its INFO lines and warnings
    # such as "no available CPUs" while the actors hold them went into the command's output); the
    # full log stays in the Ray session's ray-data.log. Failures raise here anyway.
    os.environ.setdefault("RAY_DATA_LOGGING_CONFIG", str(Path(__file__).with_name("ray_data_logging.json")))
    import ray

    if not ray.is_initialized():
        kw = {"address": address} if address else {"num_cpus": max(workers, 1)}
        ray.init(include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR, **kw)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    # the file list as Arrow blocks (~100 bytes a photo; Python dicts took several times that), enough
    # of them that every actor is fed
    import pyarrow as pa

    paths, sizes, mtimes = zip(*todo)
    table = pa.table({"path": pa.array(paths, pa.string()), "size": pa.array(sizes, pa.int64()),
                      "mtime": pa.array(mtimes, pa.int64())})
    step = int(np.clip(len(todo) // (16 * workers), batch_size, 65_536))
    ds = ray.data.from_arrow([table.slice(s, step) for s in range(0, len(todo), step)])
    run = folder / f"run-{int(time.time() * 1000):x}-{os.getpid()}"
    pool = ray.data.ActorPoolStrategy(size=workers)
    threads = max(1, int(ray.cluster_resources().get("CPU", workers)) // workers)  # the cores an actor may use
    # small jobs write a file every batch or so (an interrupted job keeps most of its work), large ones fewer, bigger files
    rows = int(np.clip(len(todo) // (8 * workers), batch_size, MAX_ROWS_PER_FILE))
    with warnings.catch_warnings():  # Ray 2.60 has no named parameter for the restarts yet
        warnings.filterwarnings("ignore", message="`ray_remote_args` is deprecated")
        ds = ds.map_batches(EncodeBatch, fn_constructor_args=(str(model_path), threads), batch_size=batch_size,
                            batch_format="numpy", compute=pool, num_cpus=1, max_restarts=-1, max_task_retries=-1)
        ds.write_parquet(str(run), min_rows_per_file=rows, ray_remote_args={"num_cpus": 0})  # never wait for a CPU


def iter_codes(folder, files, *, dim, keep_under=(), chunk=65_536):
    """Stream the codes of `files` [(path, size, mtime)] from the shards in `folder`.

    Two passes over the shards: the first reads only their key columns and picks, for each wanted
    file, one row that encoded it (rows of files since changed or gone, and duplicates from
    retried tasks, are left out); the second yields (paths, codes (m, dim) float32) of the picked
    rows in chunks of about `chunk`. Memory: 9 bytes a shard row plus one chunk of codes.
    keep_under: folders that could not be listed: the newest good row of each path under them is
    kept too (their files are unknown, not gone).

    Returns (count, errors, chunks, stale): photos to be yielded, "path: reason" of files that
    failed or are missing, the generator, and the number of shard rows not current (changed,
    gone or failed files); negative when they outnumber the current ones: then the generator also
    rewrites the current rows into new shards and deletes the old ones once all is read.
    """
    import pyarrow.parquet as pq

    prefixes = tuple(os.path.join(str(d), "") for d in keep_under)
    shards, keys, ok, under = [], [], [], []
    for f, t in _shards(folder):  # pass 1: key columns only; the tables are not kept
        shards.append(f)
        keys.append(_keys(t))
        ok.append(np.array([not e for e in t["error"].to_pylist()], bool))
        under.append(np.fromiter((hash(p) if p.startswith(prefixes) else 0 for p in t["path"].to_pylist()), np.int64,
                                 len(t)) if prefixes else np.zeros(len(t), np.int64))
    flat = np.concatenate([np.zeros(0, np.int64)] + keys)
    ok = np.concatenate([np.zeros(0, bool)] + ok)
    under = np.concatenate([np.zeros(0, np.int64)] + under)
    bounds = np.cumsum([0] + [len(k) for k in keys])
    del keys
    wanted = _hashes(*zip(*files)) if files else np.zeros(0, np.int64)
    pick = np.zeros(len(flat), bool)
    cand = np.flatnonzero(ok & np.isin(flat, wanted))
    pick[cand[np.unique(flat[cand], return_index=True)[1]]] = True  # the first good row of each file
    kept = np.flatnonzero(ok & (under != 0) & ~np.isin(flat, wanted))[::-1]  # under unlistable folders: newest
    pick[kept[np.unique(under[kept], return_index=True)[1]]] = True
    bad = np.flatnonzero(~ok & np.isin(flat, wanted) & ~np.isin(flat, flat[pick]))
    errors = []
    for i in bad[np.unique(flat[bad], return_index=True)[1]]:  # one message a file that failed
        s = int(np.searchsorted(bounds, i, side="right")) - 1
        t = pq.read_table(shards[s], columns=["path", "error"]).slice(int(i - bounds[s]), 1).to_pylist()[0]
        errors.append(f"{t['path']}: {t['error']}")
    errors += [f"{files[j][0]}: not encoded" for j in np.flatnonzero(~np.isin(wanted, flat))]

    stale = int(len(flat) - pick.sum())
    compact = stale > pick.sum()  # more old rows than current ones: rewrite the current rows, drop the rest

    def chunks():
        paths, codes, held = [], [], 0
        out = _Compactor(folder) if compact else None
        for f, lo, hi in zip(shards, bounds[:-1], bounds[1:]):  # pass 2: the picked rows' codes
            rows = np.flatnonzero(pick[lo:hi])
            if not len(rows):
                continue
            t = pq.read_table(f, columns=None if compact else ["path", "code"]).take(rows)
            if out:
                out.write(t)
            paths += t["path"].to_pylist()
            col = t["code"].combine_chunks()
            col = getattr(col, "storage", col)  # Ray's tensor extension type, when Ray is imported here
            codes.append(np.asarray(col.flatten(), np.float32).reshape(-1, dim))
            held += len(rows)
            if held >= chunk:
                yield paths, np.concatenate(codes)
                paths, codes, held = [], [], 0
        if held:
            yield paths, np.concatenate(codes)
        if out:
            out.commit(shards)
    return int(pick.sum()), errors, chunks(), stale if not compact else -stale


class _Compactor:
    """Rewrites the current shard rows into a new run folder, then removes the old shards: files
    are written under temporary names and renamed when complete; the old ones go only after that
    (an interruption in between leaves duplicates, which `iter_codes` reads once)."""

    def __init__(self, folder):
        self.run = Path(folder) / f"run-{int(time.time() * 1000):x}-{os.getpid()}-compacted"
        self.run.mkdir(parents=True)
        self.done, self.writer, self.rows = [], None, 0

    def write(self, table):
        import pyarrow.parquet as pq

        if self.writer is None or self.rows >= MAX_ROWS_PER_FILE:
            self._close()
            self.writer = pq.ParquetWriter(self.run / f"{len(self.done):06d}.parquet.tmp", table.schema)
            self.rows = 0
        self.writer.write_table(table)
        self.rows += len(table)

    def _close(self):
        if self.writer is not None:
            self.writer.close()
            self.done.append(self.run / f"{len(self.done):06d}.parquet.tmp")
            self.writer = None

    def commit(self, old):
        self._close()
        for f in self.done:
            with open(f, "rb+") as fh:
                os.fsync(fh.fileno())
            f.rename(f.with_suffix(""))
        for f in old:
            Path(f).unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                Path(f).parent.rmdir()  # a run folder left empty
