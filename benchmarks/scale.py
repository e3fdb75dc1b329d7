"""Large collections: recall, speed and size of compressed FAISS indexes on codes of real photos.

    python benchmarks/scale.py [--sizes 1000000] [--queries 200]

The codes are the default model's codes of Flickr8k's 8,091 photos (needs ../shared/data/flickr8k)
and, to reach millions, perturbed copies of them: Gaussian noise scaled so that a copy sits
as far from its photo as the photo's horizontal flip does (measured here on 500 photos). The
queries are held-out perturbed codes; recall@10 is against exact search over the same codes.
Codes are generated and added shard by shard (100k), never all held as float32 by the index.
"""
import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
FLICKR = REPO.parent / "shared" / "data" / "flickr8k"
SHARD = 100_000


def emit(name, value):
    print(f"{name}: {value:.4g}" if isinstance(value, float) else f"{name}: {value}", flush=True)


def real_codes():
    """Unit codes (8091, d) of the Flickr8k photos, and the median distance of a flip to its photo."""
    from PIL import Image

    from i2v.data import list_images
    from i2v.features import extract, get_backbone, load_image
    from i2v.models import normalize_rows
    from i2v.pipeline import load_model

    model = load_model()
    paths = list_images([FLICKR / "images"])
    feats, logits, ok, _ = extract(paths, progress=False)
    codes = normalize_rows(model.encode(feats, logits))
    net = get_backbone(model.backbone)
    sample = [paths[i] for i in ok[:500]]
    flipped = []
    for s in range(0, len(sample), 32):  # network batches of 32: activations stay small
        batch = np.stack([load_image(Image.open(p).transpose(Image.Transpose.FLIP_LEFT_RIGHT)) for p in sample[s:s + 32]])
        flipped.append(normalize_rows(model.encode(*net.forward(batch))))
    d = np.linalg.norm(np.concatenate(flipped) - codes[:500], axis=1)
    return codes.astype(np.float32), float(np.median(d))


def shards(base, n, sigma, seed):
    """Perturbed unit copies of `base`, `SHARD` at a time: (start, (m, d) float32)."""
    rng = np.random.default_rng(seed)
    d = base.shape[1]
    for start in range(0, n, SHARD):
        m = min(SHARD, n - start)
        x = base[rng.integers(len(base), size=m)] + rng.normal(scale=sigma / np.sqrt(d), size=(m, d)).astype(np.float32)
        yield start, x / np.linalg.norm(x, axis=1, keepdims=True)


def exact_top10(base, n, sigma, queries):
    """Exact top-10 ids of the queries over the n generated codes, shard by shard (running merge)."""
    import faiss

    best_d = np.full((len(queries), 10), np.inf, np.float32)
    best_i = np.full((len(queries), 10), -1, np.int64)
    for start, x in shards(base, n, sigma, seed=1):
        flat = faiss.IndexFlatL2(x.shape[1])
        flat.add(x)
        d, i = flat.search(queries, 10)
        d_all, i_all = np.concatenate([best_d, d], 1), np.concatenate([best_i, i + start], 1)
        order = np.argsort(d_all, axis=1)[:, :10]
        best_d, best_i = np.take_along_axis(d_all, order, 1), np.take_along_axis(i_all, order, 1)
    return best_i


def build(spec, base, n, sigma, refine_file, train_n=200_000):
    """A FAISS index from a factory string, trained on a sample and filled shard by shard; the
    float16 codes go to `refine_file` (memory-mapped, on disk) for re-ranking."""
    import faiss

    d = base.shape[1]
    index = faiss.index_factory(d, spec)
    t = time.perf_counter()
    sample = np.concatenate([x for _, x in shards(base, min(train_n, n), sigma, seed=2)])
    index.train(sample)
    refine = np.lib.format.open_memmap(refine_file, mode="w+", dtype=np.float16, shape=(n, d))
    for start, x in shards(base, n, sigma, seed=1):
        index.add(x)
        refine[start:start + len(x)] = x
    refine.flush()
    return index, refine, time.perf_counter() - t


def rerank(index, refine, q, k=10, shortlist=100):
    """Top-k of a query: the index's `shortlist` candidates re-ranked by exact distance (float16 codes)."""
    _, cand = index.search(q[None], shortlist)
    cand = cand[0][cand[0] >= 0]
    d = ((np.asarray(refine[np.sort(cand)], np.float32) - q) ** 2).sum(1)
    return np.sort(cand)[np.argsort(d)[:k]]


def bench_compressed(base, n, sigma, queries, truth, tmp, label):
    """The shipped CompressedIndex (i2v.compressed) at n codes: build, size, RAM, recall, latency."""
    import faiss

    from i2v.compressed import build_compressed

    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t = time.perf_counter()
    gen = ((np.array([f"/photos/{start + i:09d}.jpg" for i in range(len(x))]), x) for start, x in shards(base, n, sigma, 1))
    ix = build_compressed(gen, tmp / f"ix-{label}", dim=base.shape[1], model_name="bench", expected=n)
    emit(f"{label}_compressed_build_s", time.perf_counter() - t)
    emit(f"{label}_compressed_build_peak_rss_mb", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    emit(f"{label}_compressed_rss_before_build_mb", rss0)
    files = ix.header["files"]
    ram = (tmp / f"ix-{label}" / files["ivfpq"]).stat().st_size
    disk = sum((tmp / f"ix-{label}" / f).stat().st_size for f in files.values())
    emit(f"{label}_compressed_ram_bytes_per_photo", ram / n)
    emit(f"{label}_compressed_disk_bytes_per_photo", disk / n)
    emit(f"{label}_compressed_ram_gb", ram / 1e9)
    emit(f"{label}_compressed_lists_nprobe", f"{ix.header['nlist']}/{ix.header['nprobe']} pq {ix.header['pq']}")
    faiss.omp_set_num_threads(1)
    ts, got = [], []
    for q in queries:
        s = time.perf_counter()
        got.append([r for r, _ in ix.search_rows(q, 10)])
        ts.append(time.perf_counter() - s)
    faiss.omp_set_num_threads(os.cpu_count())
    emit(f"{label}_compressed_recall_at_10", float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(got, truth)])))
    emit(f"{label}_compressed_p50_ms_1thread", 1000 * float(np.median(ts)))
    emit(f"{label}_compressed_p95_ms_1thread", 1000 * float(np.percentile(ts, 95)))


def bench_engines(n_photos, tmp):
    """Photos/s of the local engine (fresh feature cache) and of Ray with 1 and 2 workers
    (cluster already up: its start-up is reported apart), on the same Flickr8k photos."""
    import ray

    from i2v.data import list_images
    from i2v.pipeline import load_model, sync_index, open_index, ray_encoder

    model = load_model()
    paths = list_images([FLICKR / "images"])[:n_photos]
    emit("engine_photos", len(paths))
    tmp = Path(tempfile.mkdtemp(dir=tmp))  # fresh: no cached features or shards from an earlier run
    for p in paths:  # every engine reads the files from the page cache (the first one would pay for the disk)
        Path(p).read_bytes()
    t = time.perf_counter()
    ix = open_index(tmp / "eng-local", model)
    sync_index(ix, paths, model, cache_dir=tmp / "eng-cache", progress=False)
    local = len(paths) / (time.perf_counter() - t)
    emit("engine_local_photos_per_s", local)
    t = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    emit("engine_ray_start_s", time.perf_counter() - t)
    for workers in (1, 2):
        ix = open_index(tmp / f"eng-ray{workers}", model)
        enc = ray_encoder(model, tmp / f"eng-ray{workers}" / "ray-shards", workers=workers)
        t = time.perf_counter()
        sync_index(ix, paths, model, encoder=enc, progress=False)
        rate = len(paths) / (time.perf_counter() - t)
        emit(f"engine_ray_{workers}_workers_photos_per_s", rate)
        emit(f"engine_ray_{workers}_workers_vs_local", rate / local)
    ray.shutdown()


def bench_from_shards(base, n, sigma, queries, truth, tmp, label):
    """The Ray engine's path at n codes: codes in Parquet shards as the actors write them (4,096
    rows a file), then `iter_codes` + `build_compressed` in a fresh process (its own peak RSS)."""
    import subprocess

    import pyarrow as pa
    import pyarrow.parquet as pq

    from i2v.rayengine import MAX_ROWS_PER_FILE

    folder = tmp / f"shards-{label}"
    folder.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    for start, x in shards(base, n, sigma, 1):
        for s in range(0, len(x), MAX_ROWS_PER_FILE):
            part = x[s:s + MAX_ROWS_PER_FILE]
            m = len(part)
            codes = pa.LargeListArray.from_arrays(np.arange(0, (m + 1) * part.shape[1], part.shape[1], dtype=np.int64),
                                                  pa.array(part.reshape(-1)))
            pq.write_table(pa.table({"path": [f"/photos/{start + s + i:09d}.jpg" for i in range(m)],
                                     "size": np.ones(m, np.int64), "mtime": np.ones(m, np.int64), "code": codes,
                                     "error": [""] * m}), folder / f"{start + s:09d}.parquet")
    emit(f"{label}_shards_write_s", time.perf_counter() - t)
    np.save(tmp / "queries.npy", queries)
    np.save(tmp / "truth.npy", truth)
    code = f"""
import resource, sys, time
import numpy as np
sys.path.insert(0, {str(REPO)!r})
from i2v.compressed import build_compressed
from i2v.rayengine import iter_codes
n = {n}
t = time.perf_counter()
files = [(f"/photos/{{i:09d}}.jpg", 1, 1) for i in range(n)]
count, errors, chunks, stale = iter_codes({str(folder)!r}, files, dim={base.shape[1]})
pass1 = time.perf_counter() - t
ix = build_compressed(chunks, {str(tmp / f"ix-shards-{label}")!r}, dim={base.shape[1]}, model_name="bench", expected=count)
print("{label}_from_shards_pass1_s:", round(pass1, 1))
print("{label}_from_shards_build_s:", round(time.perf_counter() - t, 1))
print("{label}_from_shards_peak_rss_mb:", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)
print("{label}_from_shards_float32_codes_mb:", n * {base.shape[1]} * 4 // 2**20, "(not held)")
q, truth = np.load({str(tmp / "queries.npy")!r}), np.load({str(tmp / "truth.npy")!r})
got = [[int(ix.path_of(r)[8:17]) for r, _ in ix.search_rows(x, 10)] for x in q]
print("{label}_from_shards_recall_at_10:", round(float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(got, truth)])), 4))
"""
    print(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout, end="",
          flush=True)


def main(argv=None):
    import faiss

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1000000", help="comma-separated collection sizes")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--engine-photos", type=int, default=0, help="also time local vs Ray encoding on N photos")
    ap.add_argument("--from-shards", action="store_true",
                    help="also build each size from Parquet shards as the Ray engine writes them (iter_codes)")
    ap.add_argument("--no-direct", action="store_true", help="skip the direct build (with --from-shards)")
    ap.add_argument("--specs", default="", help="also raw FAISS factory strings to compare, ';'-separated")
    ap.add_argument("--tmp", type=Path, default=Path(tempfile.gettempdir()), help="where the indexes are written")
    args = ap.parse_args(argv)
    faiss.omp_set_num_threads(os.cpu_count())
    if args.engine_photos:
        bench_engines(args.engine_photos, args.tmp)
    if not args.sizes:
        return
    base, flip = real_codes()
    emit("real_codes", len(base))
    emit("flip_distance_median", flip)
    sigma = flip  # a perturbed copy sits about as far from its photo as a flip
    for n in map(int, args.sizes.split(",")):
        label = f"{n / 1e6:g}m"
        queries = next(shards(base, args.queries, sigma, seed=3))[1]
        t = time.perf_counter()
        truth = exact_top10(base, n, sigma, queries)
        emit(f"{label}_exact_scan_s", time.perf_counter() - t)
        if not args.no_direct:
            bench_compressed(base, n, sigma, queries, truth, args.tmp, label)
        if args.from_shards:
            bench_from_shards(base, n, sigma, queries, truth, args.tmp, label)
        for spec in filter(None, args.specs.split(";")):
            rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            index, refine, build_s = build(spec, base, n, sigma, args.tmp / "refine.npy")
            size = faiss.serialize_index(index).nbytes
            key = f"{label}_{spec.replace(',', '_')}"
            emit(f"{key}_build_s", build_s)
            emit(f"{key}_bytes_per_code", size / n)
            emit(f"{key}_peak_rss_mb", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
            emit(f"{key}_rss_before_mb", rss0)
            ivf = faiss.extract_index_ivf(index)
            for nprobe in (16, 64):
                ivf.nprobe = nprobe
                _, got = index.search(queries, 10)
                recall = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(got, truth)]))
                faiss.omp_set_num_threads(1)
                ts = []
                for q in queries[:50]:
                    s = time.perf_counter()
                    index.search(q[None], 10)
                    ts.append(time.perf_counter() - s)
                faiss.omp_set_num_threads(os.cpu_count())
                emit(f"{key}_nprobe{nprobe}_recall_at_10", recall)
                emit(f"{key}_nprobe{nprobe}_p50_ms_1thread", 1000 * float(np.median(ts)))
                faiss.omp_set_num_threads(1)
                ts, hits = [], []
                for q in queries:
                    s = time.perf_counter()
                    hits.append(rerank(index, refine, q))
                    ts.append(time.perf_counter() - s)
                faiss.omp_set_num_threads(os.cpu_count())
                emit(f"{key}_nprobe{nprobe}_rerank100_recall_at_10",
                     float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(hits, truth)])))
                emit(f"{key}_nprobe{nprobe}_rerank100_p50_ms_1thread", 1000 * float(np.median(ts)))
            del index, refine


if __name__ == "__main__":
    main()
