"""Crash safety (kill -9 mid add_photos / mid index save) and what the server refuses to serve."""
import os
import signal
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
from PIL import Image

from conftest import REPO


def test_kill_during_add_photos_loses_nothing_reported(tmp_path):
    home, src = tmp_path / "home", tmp_path / "src"
    src.mkdir()
    rng = np.random.default_rng(0)
    for i in range(40):
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(src / f"p{i}.png")
    code = textwrap.dedent(f"""
        import sys
        from pathlib import Path
        from i2v.service import Service
        s = Service(home={str(home)!r}, progress=False)
        print("READY", flush=True)
        for p in sorted(Path({str(src)!r}).glob("*.png")):
            added, already, errors = s.add_photos([str(p)])
            print("ADDED", s.store().index.paths[-1], flush=True)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE, text=True)
    reported = []
    t0 = time.time()
    for line in proc.stdout:
        if line.startswith("ADDED"):
            reported.append(line.split(" ", 1)[1].strip())
            if len(reported) == 5:
                time.sleep(0.05 * (len(reported) % 3))
                os.kill(proc.pid, signal.SIGKILL)  # in the middle of the next add
                break
        assert time.time() - t0 < 300
    proc.wait()
    assert proc.returncode == -9 and len(reported) == 5
    from i2v.service import Service

    back = Service(home=home, progress=False)
    assert set(reported) <= set(back.store().index.paths)
    assert all(Path(p).is_file() for p in back.store().index.paths)


def test_kill_during_index_command_keeps_last_good_index(tmp_path):
    from i2v.index import GalleryIndex

    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(1)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(photos / f"a{i}.png")
    env = dict(os.environ, I2V_CACHE=str(tmp_path / "cache"))
    cmd = [sys.executable, "-m", "i2v", "index", str(photos), "--out", str(tmp_path / "ix")]
    assert subprocess.run(cmd, cwd=REPO, env=env, capture_output=True).returncode == 0
    assert len(GalleryIndex.load(tmp_path / "ix")) == 3
    for i in range(60):
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(photos / f"b{i}.png")
    for delay in (1.0, 2.5, 4.0):  # kill at several points: loading, extracting, saving
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        proc.kill()
        proc.wait()
        ix = GalleryIndex.load(tmp_path / "ix")  # always loadable: old or new, never torn
        assert len(ix) in (3, 63)
    assert subprocess.run(cmd, cwd=REPO, env=env, capture_output=True).returncode == 0
    assert len(GalleryIndex.load(tmp_path / "ix")) == 63


def test_server_refuses_paths_outside_gallery_and_uploads(server):
    uploads = server.home / "uploads"
    uploads.mkdir(parents=True, exist_ok=True)
    link = uploads / "evil.jpg"
    if not link.exists():
        link.symlink_to("/etc/passwd")
    secret = server.home / "user-index-secret.txt"
    secret.write_text("root:secret")
    for path in ("/etc/passwd", str(link), str(secret), str(REPO / "app.py"), str(uploads / ".." / "user-index-secret.txt"),
                 "../../../../etc/passwd", "%2e%2e/%2e%2e/etc/passwd"):
        for prefix in ("gradio_api/file=", "file="):
            try:
                with urllib.request.urlopen(server + prefix + path, timeout=5) as r:
                    body = r.read()
                assert b"root:" not in body and b"import gradio" not in body, path
            except urllib.error.HTTPError as e:
                assert e.code in (400, 403, 404), (path, e.code)


def test_checkpoints_and_indexes_load_without_pickle():
    for ck in (REPO / "checkpoints").glob("*/arrays.npz"):
        with np.load(ck, allow_pickle=False) as z:
            for k in z.files:
                assert z[k].dtype != object
