"""Encode photo files to codes on a Ray cluster (local, or `ray start --head` and `--address`).

The file list is a Ray dataset; an actor pool (one ONNX session and one model per actor)
decodes, runs the backbone and the model's encoder in batches, the same functions the local
engine runs (`features.load_image`, `Backbone.forward`, `Image2Vec.encode`), and writes Parquet
shards of (path, size, mtime, code, error) into a run folder. Shards already written by an
earlier, interrupted run are read first: only the rest is encoded. A file that cannot be read
is listed with its reason, never aborts the job; a worker that dies is restarted and its batch
retried (`max_restarts`, `max_task_retries`).
"""
import os
import time
from pathlib import Path

import numpy as np

SHARDS = "ray-shards"


class EncodeBatch:
    """A Ray Data actor: photos -> codes, one model and one backbone session per actor."""

    def __init__(self, model_path, threads=1):
        from . import checkpoint
        from .features import Backbone

        self.model = checkpoint.load(model_path)
        self.net = Backbone(self.model.backbone, threads=threads)
        self.size = self.net.cfg["size"]

    def __call__(self, batch):
        from .features import ImageError, load_image

        paths = [str(p) for p in batch["path"]]
        arrays, errors = [], []
        for p in paths:
            try:
                arrays.append(load_image(p, self.size))
                errors.append("")
            except ImageError as e:
                arrays.append(None)
                errors.append(e.reason)
        good = [i for i, a in enumerate(arrays) if a is not None]
        codes = np.zeros((len(paths), self.model.dim), np.float32)
        if good:
            feats, logits = self.net.forward(np.stack([arrays[i] for i in good]))
            codes[good] = self.model.encode(feats, logits)
        return {"path": np.array(paths, dtype=object), "size": batch["size"], "mtime": batch["mtime"],
                "code": list(codes), "error": np.array(errors, dtype=object)}


def read_shards(folder):
    """{(path, size, mtime): (code or None, error)} from the Parquet shards under `folder`
    (unreadable shards, e.g. torn by a kill, are skipped: their photos are encoded again)."""
    import pyarrow.parquet as pq

    done = {}
    for f in sorted(Path(folder).rglob("*.parquet")) if Path(folder).is_dir() else []:
        try:
            t = pq.read_table(f).to_pydict()
        except Exception:  # noqa: BLE001 - a torn shard is redone, whatever pyarrow says about it
            continue
        for p, s, m, c, e in zip(t["path"], t["size"], t["mtime"], t["code"], t["error"]):
            done[(p, int(s), int(m))] = (None if e else np.asarray(c, np.float32), e)
    return done


def encode_files(files, model_path, folder, *, address=None, workers=2, batch_size=32, log=None):
    """Codes of `files` [(path, size, mtime)] under the model in `model_path`, via Ray.

    Returns {(path, size, mtime): (code or None, error)} for every file (from earlier shards
    in `folder` where present). `address`: None starts a local cluster; "auto" or "ray://..." joins one.
    """
    import ray

    folder = Path(folder)
    done = read_shards(folder)
    todo = [f for f in files if tuple(f) not in done]
    if log:
        log(f"ray: {len(files) - len(todo)} photos already encoded in {folder}, {len(todo)} to encode")
    if todo:
        import logging

        if not ray.is_initialized():
            kw = {"address": address} if address else {"num_cpus": max(workers, 1)}
            ray.init(include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING, **kw)
        logging.getLogger("ray.data").setLevel(logging.WARNING)
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        ds = ray.data.from_items([{"path": p, "size": s, "mtime": m} for p, s, m in todo])
        run = folder / f"run-{int(time.time() * 1000):x}-{os.getpid()}"
        pool = ray.data.ActorPoolStrategy(size=workers)
        threads = max(1, int(ray.cluster_resources().get("CPU", workers)) // workers)  # the cores an actor may use
        ds.map_batches(EncodeBatch, fn_constructor_args=(str(model_path), threads), batch_size=batch_size,
                       batch_format="numpy", compute=pool, num_cpus=1, max_restarts=-1, max_task_retries=-1
                       ).write_parquet(str(run), ray_remote_args={"num_cpus": 0})  # writes never wait for a CPU
        done = read_shards(folder)
    return {tuple(f): done[tuple(f)] for f in files if tuple(f) in done}
