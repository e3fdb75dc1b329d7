"""autofaiss (the index tuner clip-retrieval uses) on the same 1M real-photo codes as scale.py.

autofaiss pins numpy<2 (so pyarrow<16) and cannot share the project's environment:

    .venv/bin/python benchmarks/autofaiss_compare.py --export /tmp/codes.npz     # project venv
    python3 -m venv /tmp/af && /tmp/af/bin/pip install autofaiss "pyarrow<16"
    /tmp/af/bin/python benchmarks/autofaiss_compare.py --codes /tmp/codes.npz [--memory 64MB]

Prints the index autofaiss chooses under the memory budget, its size, build time, recall@10
against exact search and single-query p50 (compare with the compressed index in results_scale.txt).
"""
import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scale import real_codes, shards  # noqa: E402  (scale.py imports i2v only inside real_codes)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--export", help="write the real codes and the perturbation scale here (project venv)")
    ap.add_argument("--codes", help="the file --export wrote (autofaiss venv)")
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--memory", default="64MB", help="autofaiss max_index_memory_usage")
    args = ap.parse_args()
    if args.export:
        base, flip = real_codes()
        np.savez(args.export, base=base, sigma=flip)
        return
    import faiss
    from autofaiss import build_index

    z = np.load(args.codes)
    base, sigma = z["base"], float(z["sigma"])
    X = np.concatenate([x for _, x in shards(base, args.n, sigma, 1)]).astype(np.float32)
    queries = next(shards(base, 200, sigma, 3))[1].astype(np.float32)
    flat = faiss.IndexFlatL2(X.shape[1])
    flat.add(X)
    _, truth = flat.search(queries, 10)
    del flat
    t = time.time()
    index, info = build_index(embeddings=X, max_index_memory_usage=args.memory, current_memory_available="8G",
                              metric_type="l2", save_on_disk=False, verbose=30)
    build = time.time() - t
    faiss.omp_set_num_threads(1)
    ts, got = [], []
    for q in queries:
        s = time.perf_counter()
        got.append(index.search(q[None], 10)[1][0])
        ts.append(time.perf_counter() - s)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(got, truth)])
    print(f"autofaiss {args.memory}: {info.get('index_key')} {info.get('index_param')} "
          f"bytes/code {len(faiss.serialize_index(index)) / args.n:.1f} build {build:.0f} s "
          f"recall@10 {recall:.3f} p50 {1000 * np.median(ts):.2f} ms")


if __name__ == "__main__":
    main()
