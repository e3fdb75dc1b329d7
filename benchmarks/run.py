"""Benchmarks: every figure beside a reference measured in the same run (ratios, not timed asserts).

    python benchmarks/run.py --quick     # <= 60 s, one `name: value` line per figure
    python benchmarks/run.py             # full run: the tables in the README
"""
import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
FLICKR = REPO.parent / "shared" / "data" / "flickr8k" / "images"


def emit(name, value, fmt="{:.4g}"):
    print(f"{name}: {fmt.format(value) if isinstance(value, (int, float, np.floating)) else value}", flush=True)


def timeit(fn, n, warmup=1):
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return np.array(ts)


def machine():
    cpu = platform.processor() or ""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}"


def bench_omp(quick):
    """Our batched OMP vs sklearn's orthogonal_mp_gram on the best model's dictionary."""
    from sklearn.linear_model import orthogonal_mp_gram

    from i2v import checkpoint
    from i2v.sparse import omp_gram

    model = checkpoint.load()
    A = model.atoms.astype(np.float64)
    G = A.T @ A
    n = 2000 if quick else 10_000
    rng = np.random.default_rng(0)
    X = np.zeros((n, A.shape[1]))
    for i in range(n):  # planted 3-word codes plus noise, in the model's own word space
        X[i, rng.choice(A.shape[1], 3, replace=False)] = rng.uniform(0.3, 1.5, 3)
    Y = X @ A.T + 0.05 * rng.normal(size=(n, A.shape[0]))
    Xy = Y @ A
    omp_gram(G, Xy[:100], 3, non_negative=False)  # warm up (first-touch of the Gram matrix)
    orthogonal_mp_gram(G, Xy[:100].T, n_nonzero_coefs=3)
    t = time.perf_counter()
    s_ours, _ = omp_gram(G, Xy, 3, non_negative=False)
    t_ours = time.perf_counter() - t
    t = time.perf_counter()
    ref = orthogonal_mp_gram(G, Xy.T, n_nonzero_coefs=3)
    t_sk = time.perf_counter() - t
    mism = sum(set(s_ours[i]) != set(np.flatnonzero(ref[:, i])) for i in range(n))
    t = time.perf_counter()
    omp_gram(G, Xy, 3, non_negative=True)
    t_nn = time.perf_counter() - t
    emit("omp_codes", n, "{}")
    emit("omp_support_mismatches", mism, "{}")
    emit("omp_ours_ms", 1000 * t_ours)
    emit("omp_sklearn_ms", 1000 * t_sk)
    emit("omp_speedup_vs_sklearn", t_sk / t_ours)
    emit("omp_nonneg_speedup_vs_sklearn", t_sk / t_nn)


def make_photos(folder):
    from PIL import Image

    src = REPO / "demo" / "gallery" / "open" / "scikit-image-chelsea.jpg"
    im = Image.open(src).convert("RGB")
    small = folder / "photo_640.jpg"
    im.resize((640, 480)).save(small, quality=90)
    big = folder / "photo_12mp.jpg"
    im.resize((4000, 3000), Image.BICUBIC).save(big, quality=90)
    return small, big


def bench_summarize(quick, folder):
    """One photo end to end (decode, preprocess, CNN, OMP) on one thread."""
    import torch

    from i2v import checkpoint
    from i2v.features import _BACKBONES, Backbone
    from i2v.pipeline import encode_photo, summarize

    torch.set_num_threads(1)
    model = checkpoint.load()
    net = _BACKBONES[model.backbone] = Backbone(model.backbone, threads=1)  # one-thread backbone for this figure
    emit("backbone_runtime", net.runtime, "{}")
    small, big = make_photos(folder)

    def run(p):  # the app's path: photo -> code -> words
        summarize(model, encode_photo(model, p), 3)

    n = 20 if quick else 100
    for name, p in (("640", small), ("12mp", big)):
        ts = timeit(lambda: run(p), n, warmup=2)
        emit(f"summarize_{name}_p50_ms" if name != "640" else "summarize_p50_ms", 1000 * np.median(ts))
        emit(f"summarize_{name}_p95_ms", 1000 * np.percentile(ts, 95))
    del _BACKBONES[model.backbone]
    torch.set_num_threads(os.cpu_count())


def bench_extract(quick, folder):
    """extract() throughput on real photos vs the CNN forward alone on pre-decoded batches."""
    import torch

    from i2v.data import list_images
    from i2v.features import extract, get_backbone, load_image

    paths = sorted(str(p) for p in FLICKR.glob("*.jpg"))[: (128 if quick else 1024)] if FLICKR.is_dir() else \
        list_images([REPO / "demo" / "gallery"])
    net = get_backbone()
    batch = np.stack([load_image(p) for p in paths[:32]])
    n_batches = max(1, len(paths) // 32)
    net.forward(batch)
    t = time.perf_counter()
    for _ in range(n_batches):
        net.forward(batch)
    fwd = n_batches * 32 / (time.perf_counter() - t)
    t = time.perf_counter()
    extract(paths, cache_dir=folder / "cache", progress=False)
    ext = len(paths) / (time.perf_counter() - t)
    emit("extract_images", len(paths), "{}")
    emit("extract_images_per_s", ext)
    emit("forward_images_per_s", fwd)
    emit("extract_ratio_vs_forward", ext / fwd)
    return fwd


def bench_cnn_limit(quick, fwd_ips):
    """Achieved GFLOP/s of the CNN against a float32 matmul on the same cores; variants tried."""
    import torch

    from i2v.features import Backbone, load_image

    gflop = 0.4  # EfficientNet-Lite0 at 224 px, per image (multiply-adds x 2)
    a = torch.randn(2048, 2048)
    b = torch.randn(2048, 2048)
    ts = timeit(lambda: a @ b, 5 if quick else 20)
    mm = 2 * 2048 ** 3 / np.median(ts) / 1e9
    emit("matmul_gflops", mm)
    emit("cnn_gflops", fwd_ips * gflop)
    emit("cnn_fraction_of_matmul", fwd_ips * gflop / mm)
    photos = sorted(str(p) for p in (REPO / "demo" / "gallery").glob("*/*.jpg"))[:32]
    x = np.stack([load_image(p) for p in photos])
    tb = Backbone(runtime="torch")
    ref, _ = tb.forward(x)
    base = timeit(lambda: tb.forward(x), 3 if quick else 5)
    cos = lambda a, b: float(np.min(np.sum(a * b, 1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)))
    try:
        ob = Backbone(runtime="onnx")
        o_t = timeit(lambda: ob.forward(x), 3 if quick else 5)
        emit("cnn_onnxruntime_speedup_vs_torch", np.median(base) / np.median(o_t))
        emit("cnn_onnxruntime_min_cosine", cos(ref, ob.forward(x)[0]))
    except RuntimeError as e:
        emit("cnn_onnxruntime_speedup_vs_torch", f"unavailable ({e})", "{}")
    if quick:
        return
    emit("cnn_torch_fp32_batch32_ms", 1000 * np.median(base))
    tb.model = tb.model.to(memory_format=torch.channels_last)  # channels-last memory format
    cl_t = timeit(lambda: tb.forward(x), 5)
    emit("cnn_torch_channels_last_speedup", np.median(base) / np.median(cl_t))
    emit("cnn_torch_channels_last_min_cosine", cos(ref, tb.forward(x)[0]))
    tb.model = tb.model.to(memory_format=torch.contiguous_format)
    # dynamic int8 quantization only covers Linear layers: the convolutions stay float
    orig = tb.model
    tb.model = torch.ao.quantization.quantize_dynamic(orig, {torch.nn.Linear}, dtype=torch.qint8)
    q_t = timeit(lambda: tb.forward(x), 5)
    emit("cnn_torch_dynamic_int8_speedup", np.median(base) / np.median(q_t))
    emit("cnn_torch_dynamic_int8_min_cosine", cos(ref, tb.forward(x)[0]))
    tb.model = orig
    for threads in (1, 2):
        torch.set_num_threads(threads)
        emit(f"cnn_torch_batch32_ms_{threads}_threads", 1000 * np.median(timeit(lambda: tb.forward(x), 3)))
    torch.set_num_threads(os.cpu_count())


def bench_search(quick):
    """Exact vs approximate FAISS search on synthetic codes of the model's size."""
    import faiss

    from i2v import checkpoint
    from i2v.index import build_faiss

    d = checkpoint.load().dim
    sizes = (10_000, 100_000) if quick else (10_000, 100_000, 1_000_000)
    rng = np.random.default_rng(0)
    faiss.omp_set_num_threads(os.cpu_count())
    for n in sizes:
        centers = rng.normal(size=(1000, d)).astype(np.float32)
        codes = centers[rng.integers(1000, size=n)] + 0.7 * rng.normal(size=(n, d)).astype(np.float32)
        queries = codes[rng.choice(n, 200)] + 0.3 * rng.normal(size=(200, d)).astype(np.float32)
        flat = build_faiss(codes, exact=True)
        label = f"{n // 1000}k" if n < 1_000_000 else "1m"
        single = timeit(lambda: flat.search(queries[:1], 10), 30 if n < 10**6 else 10)
        emit(f"search_{label}_p50_ms", 1000 * np.median(single))
        t = time.perf_counter()
        _, exact = flat.search(queries, 10)
        emit(f"search_{label}_batch_qps", len(queries) / (time.perf_counter() - t))
        if n >= 100_000:
            t = time.perf_counter()
            ivf = build_faiss(codes, exact=False)
            emit(f"ivf_{label}_build_s", time.perf_counter() - t)
            one = timeit(lambda: ivf.search(queries[:1], 10), 30)
            _, approx = ivf.search(queries, 10)
            rec = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(approx, exact)])
            emit(f"ivf_{label}_p50_ms", 1000 * np.median(one))
            emit(f"ivf_{label}_recall_at_10", rec)
            emit(f"ivf_{label}_speedup_vs_exact", np.median(single) / np.median(one))
        del codes, flat


def bench_training():
    """Training time of each model on Flickr8k train (features cached first)."""
    if not FLICKR.is_dir():
        emit("train_seconds", "skipped (no ../shared/data/flickr8k)")
        return
    with tempfile.TemporaryDirectory() as tmp:
        for kind in ("simple", "baseline", "learn-all", "weak-tag"):
            t = time.perf_counter()
            subprocess.run([sys.executable, "-m", "i2v", "train", "--model", kind, "--data", str(FLICKR.parent),
                            "--format", "flickr8k", "--out", f"{tmp}/{kind}"], cwd=REPO, check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            emit(f"train_{kind}_s", time.perf_counter() - t)


def _rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) / 1024 for line in f if line.startswith("VmRSS"))


def bench_app_session():
    """The app as a person meets it: start -> page, each task's first answer after the page is
    served, and the server's memory after a session of use (5 summaries, 3 searches, 2 neighbours)."""
    from gradio_client import Client, handle_file

    from i2v.appserver import running_app
    from i2v.checkpoint import DEFAULT_MODEL

    photos = sorted(str(p) for p in (REPO / "demo" / "gallery").glob("*/*.jpg"))
    with tempfile.TemporaryDirectory() as home:
        t0 = time.perf_counter()
        with running_app(home=home) as (url, proc):
            emit("app_start_to_page_s", time.perf_counter() - t0)
            emit("app_rss_at_start_mb", _rss_mb(proc.pid))
            c = Client(url, verbose=False, download_files=False)
            firsts = {}
            for name, call in (("search", lambda: c.predict("dog + grass", None, 12, api_name="/search")),
                               ("summarize", lambda: c.predict(handle_file(photos[0]), 3, DEFAULT_MODEL,
                                                               api_name="/summarize")),
                               ("neighbours", lambda: c.predict("yellow", 10, api_name="/neighbours"))):
                t = time.perf_counter()
                call()
                firsts[name] = time.perf_counter() - t
                emit(f"app_first_{name}_s", firsts[name])
            emit("app_first_answer_max_s", max(firsts.values()))
            for p in photos[1:5]:
                c.predict(handle_file(p), 3, DEFAULT_MODEL, api_name="/summarize")
            for q in ("two dogs running on the beach", "snow"):
                c.predict(q, None, 12, api_name="/search")
            c.predict("dog", 10, api_name="/neighbours")
            emit("app_rss_after_session_mb", _rss_mb(proc.pid))
            emit("app_rss_target_mb", 600, "{}")


def bench_cli_wall(index_dir):
    """Wall time of one-word CLI commands, Python start included (median of 5)."""
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    subprocess.run([sys.executable, "-m", "i2v", "index", str(REPO / "demo" / "gallery"), "--out", str(index_dir)],
                   cwd=REPO, env=env, check=True, capture_output=True)
    for name, argv in (("search_word", ["search", "dog", "--index", str(index_dir), "-k", "5"]),
                       ("search_sum", ["search", "dog + grass", "--index", str(index_dir), "-k", "5"]),
                       ("neighbours_word", ["neighbours", "dog", "-k", "5"]),
                       ("python_start", None)):
        cmd = [sys.executable, "-m", "i2v"] + argv if argv else [sys.executable, "-c", "pass"]
        ts = []
        for _ in range(5):
            t = time.perf_counter()
            subprocess.run(cmd, cwd=REPO, env=env, check=True, capture_output=True)
            ts.append(time.perf_counter() - t)
        emit(f"cli_{name}_wall_s", float(np.median(ts)))
    emit("cli_wall_target_s", 1.5)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="~60 s: smaller sizes, no training")
    args = ap.parse_args(argv)
    emit("machine", machine(), "{}")
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        bench_omp(args.quick)
        bench_summarize(args.quick, tmp)
        fwd = bench_extract(args.quick, tmp)
        bench_cnn_limit(args.quick, fwd)
        bench_search(args.quick)
        if not args.quick:
            bench_training()
        bench_cli_wall(tmp / "gallery_index")
        bench_app_session()
    emit("benchmark_seconds", time.perf_counter() - t0)


if __name__ == "__main__":
    main()
