"""The Ray engine on a local cluster: the same codes and results as the local engine, a worker
killed mid-job loses nothing, an interrupted job resumes with only the rest."""
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO

pytest.importorskip("ray")


def photos(folder, n, size=(96, 64), seed=0):
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        a = np.repeat(np.repeat(rng.integers(0, 255, (size[1] // 8, size[0] // 8, 3), dtype=np.uint8), 8, 0), 8, 1)
        Image.fromarray(a).save(folder / f"p{seed}-{i:04d}.jpg", quality=90)
    return folder


@pytest.fixture(scope="module")
def ray_cluster():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_same_codes_and_results_as_the_local_engine(tmp_path, monkeypatch, ray_cluster):
    from i2v.index import GalleryIndex
    from i2v.pipeline import index_folders, load_index, query_vector, search

    monkeypatch.setenv("I2V_CACHE", str(tmp_path / "cache"))
    g = photos(tmp_path / "g", 200)
    (g / "broken.jpg").write_bytes(b"not a photo")
    quiet = lambda m: None  # noqa: E731
    local, errs_l = index_folders([g], tmp_path / "local", log=quiet)
    rayed, errs_r = index_folders([g], tmp_path / "ray", engine="ray", log=quiet)
    assert local["photos"] == rayed["photos"] == 200 and len(errs_r) == 1 and "broken.jpg" in errs_r[0]
    a, b = GalleryIndex.load(tmp_path / "local"), GalleryIndex.load(tmp_path / "ray")
    rows = {p: i for i, p in enumerate(a.paths)}
    assert max(np.abs(a.codes[rows[p]] - b.codes[j]).max() for j, p in enumerate(b.paths)) <= 1e-5
    for text in ("dog + grass", "red", "snow + young"):
        ia, model = load_index(tmp_path / "local")
        ib, _ = load_index(tmp_path / "ray")
        q, _, _ = query_vector(model, text)
        assert [p for p, _ in search([ia], q, 10)] == [p for p, _ in search([ib], q, 10)]


def test_interrupted_job_resumes_with_only_the_rest(tmp_path, monkeypatch, ray_cluster):
    from i2v.pipeline import index_folders

    monkeypatch.setenv("I2V_CACHE", str(tmp_path / "cache"))
    g = photos(tmp_path / "g", 60)
    index_folders([g], tmp_path / "ix", engine="ray", log=lambda m: None)
    (tmp_path / "ix" / "index.npz").unlink()  # interrupted after the shards, before the index was saved
    photos(g, 15, seed=1)
    lines = []
    summary, _ = index_folders([g], tmp_path / "ix", engine="ray", log=lines.append)
    assert summary["photos"] == 75
    assert "ray: 60 photos already encoded" in "\n".join(lines) and "15 to encode" in "\n".join(lines)


def test_a_worker_killed_mid_job_loses_nothing(tmp_path):
    g = photos(tmp_path / "g", 400, size=(1200, 800))
    env = dict(os.environ, I2V_CACHE=str(tmp_path / "cache"))
    proc = subprocess.Popen([sys.executable, "-m", "i2v", "index", str(g), "--out", str(tmp_path / "ix"),
                             "--engine", "ray"], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    killed, t0 = None, time.time()
    while killed is None and proc.poll() is None and time.time() - t0 < 120:
        out = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
        workers = [int(line.split()[0]) for line in out.splitlines() if "EncodeBatch" in line]
        if workers:
            time.sleep(1.0)  # let it take a batch
            os.kill(workers[0], signal.SIGKILL)
            killed = workers[0]
        time.sleep(0.2)
    out, err = proc.communicate(timeout=300)
    assert killed, "no Ray worker seen to kill (the job ended first)"
    assert proc.returncode == 0, err[-2000:]
    summary = [json.loads(m) for m in re.findall(r'\{"index".*?\}', out)]  # Ray may print beside it
    assert summary and summary[-1]["photos"] == 400, out[-2000:]


def test_compressed_index_from_the_shards_finds_what_the_local_engine_finds(tmp_path, monkeypatch, ray_cluster):
    """--compressed fills IVF-PQ from the Parquet shards; below the shortlist it re-ranks every
    photo exactly, so the results are the local float32 index's (codes stored in float16)."""
    from i2v.compressed import CompressedIndex
    from i2v.index import GalleryIndex
    from i2v.pipeline import index_folders, load_index, query_vector, search

    monkeypatch.setenv("I2V_CACHE", str(tmp_path / "cache"))
    g = photos(tmp_path / "g", 200, seed=3)
    (g / "broken.jpg").write_bytes(b"not a photo")
    quiet = lambda m: None  # noqa: E731
    index_folders([g], tmp_path / "local", log=quiet)
    summary, errors = index_folders([g], tmp_path / "cx", engine="ray", compressed=True, log=quiet)
    assert summary["photos"] == 200 and summary["compressed"] and len(errors) == 1 and "broken.jpg" in errors[0]
    a, b = GalleryIndex.load(tmp_path / "local"), GalleryIndex.load(tmp_path / "cx")
    assert isinstance(b, CompressedIndex)
    rows = {p: i for i, p in enumerate(a.paths)}
    assert max(np.abs(a.codes[rows[b.path_of(j)]] - b.code_of_row(j)).max() for j in range(len(b))) <= 2e-3
    ia, model = load_index(tmp_path / "local")
    ib, _ = load_index(tmp_path / "cx")
    for text in ("dog + grass", "red", "snow + young"):
        q, _, _ = query_vector(model, text)
        ra, rb = search([ia], q, 10), search([ib], q, 10)
        exact = dict(search([ia], q, 100))  # the float32 distance of every photo
        assert np.allclose([d for _, d in ra], [d for _, d in rb], atol=2e-3)
        assert all(exact[p] <= ra[-1][1] + 2e-3 for p, _ in rb)  # the same ten, up to float16 near-ties
        assert sum(p == r for (p, _), (r, _) in zip(ra, rb)) >= 7

    # a re-run: one photo changed, one gone; only the changed one is encoded; the index follows
    (g / "p3-0000.jpg").unlink()
    photos(g, 1, seed=4)  # p4-0000.jpg, new
    os.utime(g / "p3-0001.jpg", ns=(1, 10**18))
    lines = []
    summary, _ = index_folders([g], tmp_path / "cx", engine="ray", log=lines.append)  # compressed: kept
    assert summary["compressed"] and summary["photos"] == 200 and summary["encoded"] == 2, lines
    assert "already encoded" in "\n".join(lines)
    b = GalleryIndex.load(tmp_path / "cx")
    paths = {b.path_of(j) for j in range(len(b))}
    assert str(g / "p4-0000.jpg") in paths and str(g / "p3-0000.jpg") not in paths


def test_a_filesystem_uri_is_indexed_like_the_local_folder(tmp_path, monkeypatch, ray_cluster):
    """A folder given as a pyarrow filesystem URI (file://, the code path s3:// and gs:// take):
    listed and read through pyarrow, the same codes as the local paths."""
    from i2v.index import GalleryIndex
    from i2v.pipeline import index_folders

    monkeypatch.setenv("I2V_CACHE", str(tmp_path / "cache"))
    g = photos(tmp_path / "g", 40, seed=5)
    (g / "sub").mkdir()
    (g / "p5-0000.jpg").rename(g / "sub" / "p5-0000.jpg")
    (g / "broken.jpg").write_bytes(b"\xff\xd8 not a photo")
    quiet = lambda m: None  # noqa: E731
    index_folders([g], tmp_path / "local", log=quiet)
    summary, errors = index_folders([g.as_uri()], tmp_path / "uri", engine="ray", log=quiet)
    assert summary["photos"] == 40 and len(errors) == 1 and errors[0].startswith(g.as_uri() + "/broken.jpg: ")
    a, b = GalleryIndex.load(tmp_path / "local"), GalleryIndex.load(tmp_path / "uri")
    assert sorted(b.paths) == sorted(Path(p).as_uri() for p in a.paths)
    rows = {Path(p).as_uri(): i for i, p in enumerate(a.paths)}
    assert max(np.abs(a.codes[rows[p]] - b.codes[j]).max() for j, p in enumerate(b.paths)) <= 1e-5
