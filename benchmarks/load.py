"""Load test: N concurrent clients on loopback mixing summarize and search for a fixed time.

    python benchmarks/load.py [--clients 50] [--seconds 60]

Starts the app on a free loopback port, runs the clients, prints errors and p50/p95 latency,
and checks that the page itself stays responsive meanwhile. Bounded in time; loopback only.
"""
import argparse
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
QUERIES = ["dog + grass", "snow + young", "beach + child", "red", "dog - leash + ball", "two people by the water"]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--seconds", type=float, default=60)
    args = ap.parse_args(argv)
    from gradio_client import Client, handle_file

    from i2v.appserver import running_app

    with tempfile.TemporaryDirectory() as home, running_app(home=home) as (url, _):
        photos = sorted(str(p) for p in (REPO / "demo" / "gallery").glob("*/*.jpg"))
        lat = {"summarize": [], "search": []}
        errors, lock = [], threading.Lock()
        stop = time.time() + args.seconds

        def worker(i):
            try:
                c = Client(url, verbose=False, download_files=False)  # measure the server, not file downloads
            except Exception as e:
                with lock:
                    errors.append(f"connect: {e}")
                return
            rng = np.random.default_rng(i)
            while time.time() < stop:
                kind = "summarize" if rng.random() < 0.5 else "search"
                t = time.perf_counter()
                try:
                    if kind == "summarize":
                        c.predict(handle_file(photos[rng.integers(len(photos))]), 3, "learn-all", api_name="/summarize")
                    else:
                        c.predict(QUERIES[rng.integers(len(QUERIES))], None, 12, api_name="/search")
                    with lock:
                        lat[kind].append(time.perf_counter() - t)
                except Exception as e:
                    with lock:
                        errors.append(f"{kind}: {type(e).__name__}: {str(e)[:100]}")

        page = []

        def pager():  # the page must stay responsive while the queue is full
            while time.time() < stop:
                t = time.perf_counter()
                try:
                    urllib.request.urlopen(url, timeout=10).read()
                    page.append(time.perf_counter() - t)
                except Exception as e:
                    with lock:
                        errors.append(f"page: {e}")
                time.sleep(1)

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(args.clients)]
        threads.append(threading.Thread(target=pager))
        for t in threads:
            t.start()
        for t in threads:
            t.join(args.seconds + 120)
        print(f"clients: {args.clients}")
        print(f"seconds: {args.seconds:g}")
        print(f"errors: {len(errors)}")
        for e in errors[:5]:
            print("  " + e)
        for kind, v in lat.items():
            if v:
                print(f"{kind}_requests: {len(v)}")
                print(f"{kind}_p50_ms: {1000 * np.median(v):.0f}")
                print(f"{kind}_p95_ms: {1000 * np.percentile(v, 95):.0f}")
        if page:
            print(f"page_load_p50_ms: {1000 * np.median(page):.0f}")
            print(f"page_load_max_ms: {1000 * max(page):.0f}")
        return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
