"""Load test: N concurrent clients on loopback calling summarize for a fixed time, against the app
and, in the same run, against a no-op app with the same endpoint (benchmarks/noop_app.py): the
no-op's answers/s is Gradio's own ceiling on this machine, the reference for the app's figure.
A third run returns the app's kind of outputs from the no-op (`noop_app.py --outputs`: three
words, a line, six static thumbnails) to tell Gradio's cost of those outputs from the app's own.

    python benchmarks/load.py [--clients 50] [--seconds 30]

The client is light (asyncio + httpx over Gradio's HTTP API: upload -> /gradio_api/call/summarize
-> event stream) and reports its own CPU, so the figures measure the server, not the client. Each
simulated user keeps one Gradio session for all its calls, as a browser tab or a gradio_client
Client does (a fresh session per call would add Gradio's per-session set-up to every answer).
"""
import argparse
import asyncio
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from i2v.checkpoint import DEFAULT_MODEL  # noqa: E402  (the app's own model: one model loaded)


async def summarize(client, base, photo, name, session):
    """One summarize through the HTTP API in a user's session (as a browser tab or a gradio_client
    Client keeps one); returns the final event name ("complete" or "error")."""
    r = await client.post(base + "gradio_api/upload", files={"files": (name, photo, "image/jpeg")})
    r.raise_for_status()
    payload = {"data": [{"path": r.json()[0], "meta": {"_type": "gradio.FileData"}}, 3, DEFAULT_MODEL],
               "session_hash": session}
    r = await client.post(base + "gradio_api/call/summarize", json=payload)
    r.raise_for_status()
    event = None
    async with client.stream("GET", base + f"gradio_api/call/summarize/{r.json()['event_id']}") as s:
        async for line in s.aiter_lines():
            if line.startswith("event:"):
                event = line.split(":", 1)[1].strip()
            elif line.startswith("data:") and event in ("complete", "error"):
                return event
    return event or "no answer"


async def run_load(base, photos, clients, seconds):
    import httpx

    lat, errors = [], []
    stop = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=clients * 2, max_keepalive_connections=clients * 2)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:
        async def worker(i):
            rng = np.random.default_rng(i)
            session = f"load-{i}-{rng.integers(1 << 30)}"  # one simulated user: one session
            while time.perf_counter() < stop:
                name, data = photos[rng.integers(len(photos))]
                t = time.perf_counter()
                try:
                    event = await summarize(client, base, data, name, session)
                    if event == "complete":
                        lat.append(time.perf_counter() - t)
                    else:
                        errors.append(event)
                except Exception as e:  # noqa: BLE001 - every failure is counted and shown
                    errors.append(f"{type(e).__name__}: {str(e)[:80]}")

        t0 = time.perf_counter()
        await asyncio.gather(*(worker(i) for i in range(clients)))
        wall = time.perf_counter() - t0
    return lat, errors, wall


def server_cpu(pid):
    """CPU seconds of the server process: (all threads, its main thread = Gradio's event loop)."""
    tick = os.sysconf("SC_CLK_TCK")

    def secs(stat):
        f = open(stat).read().rsplit(")", 1)[1].split()
        return (int(f[11]) + int(f[12])) / tick
    return secs(f"/proc/{pid}/stat"), secs(f"/proc/{pid}/task/{pid}/stat")


def measure(label, script, args, photos, *script_args):
    from i2v.appserver import running_app

    with tempfile.TemporaryDirectory() as home, running_app(*script_args, home=home, script=script) as (url, proc):
        asyncio.run(run_load(url, photos, 4, 3))  # warm-up
        cpu0, server0 = resource.getrusage(resource.RUSAGE_SELF), server_cpu(proc.pid)
        lat, errors, wall = asyncio.run(run_load(url, photos, args.clients, args.seconds))
        cpu1, server1 = resource.getrusage(resource.RUSAGE_SELF), server_cpu(proc.pid)
    client_cpu = (cpu1.ru_utime - cpu0.ru_utime + cpu1.ru_stime - cpu0.ru_stime) / wall
    rate = len(lat) / wall
    print(f"{label}_answers: {len(lat)}")
    print(f"{label}_answers_per_s: {rate:.1f}")
    print(f"{label}_p50_ms: {1000 * np.median(lat):.0f}" if lat else f"{label}_p50_ms: -")
    print(f"{label}_p95_ms: {1000 * np.percentile(lat, 95):.0f}" if lat else f"{label}_p95_ms: -")
    print(f"{label}_errors: {len(errors)}" + (f"  (first: {errors[0]})" if errors else ""))
    print(f"{label}_client_cpu_cores: {client_cpu:.2f}")
    # Python runs one thread at a time: the server tops out when its event loop plus the Python
    # parts of the request threads fill one core, whatever the other core does
    print(f"{label}_server_cpu_cores: {(server1[0] - server0[0]) / wall:.2f}  "
          f"(event loop thread {(server1[1] - server0[1]) / wall:.2f}; "
          f"{1000 * (server1[0] - server0[0]) / max(len(lat), 1):.1f} ms CPU per answer)", flush=True)
    return rate, lat, errors


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--seconds", type=float, default=30)
    args = ap.parse_args(argv)
    photos = [(p.name, p.read_bytes()) for p in sorted((REPO / "demo" / "gallery").glob("*/*.jpg"))]
    print(f"clients: {args.clients}\nseconds: {args.seconds:g}")
    noop, _, _ = measure("noop", REPO / "benchmarks" / "noop_app.py", args, photos)
    outputs, _, _ = measure("noop_outputs", REPO / "benchmarks" / "noop_app.py", args, photos, "--outputs")
    app, lat, errors = measure("summarize", "app.py", args, photos)
    print(f"noop_outputs_vs_noop: {outputs / noop:.2f}  (Gradio's handling of the app's kind of outputs alone)")
    print(f"summarize_vs_noop_outputs: {app / outputs:.2f}  (the app's own work)")
    print(f"summarize_vs_noop: {app / noop:.2f}  (target >= 0.7; p95 target <= 2000 ms; 0 errors)")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
