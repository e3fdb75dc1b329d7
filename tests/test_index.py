import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from i2v.index import GalleryIndex, build_faiss
from i2v.pipeline import sync_index
from i2v.models import normalize_rows as unit


def brute(codes, q, k):
    d = np.linalg.norm(codes[None] - q[:, None], axis=-1)
    return np.argsort(d, axis=1, kind="stable")[:, :k], np.sort(d, axis=1)[:, :k]


@pytest.mark.parametrize("normalize", [True, False])
def test_flat_equals_brute_force(normalize, tmp_path):
    rng = np.random.default_rng(0)
    codes = (rng.normal(size=(2000, 32)) * rng.uniform(0.5, 2, size=(2000, 1))).astype(np.float32)
    q = rng.normal(size=(50, 32)).astype(np.float32)
    idx = GalleryIndex(32, "m", codes, [f"p{i}" for i in range(2000)], [0] * 2000, [0] * 2000, normalize=normalize)
    idx.save(tmp_path)
    idx = GalleryIndex.load(tmp_path)
    assert idx.normalize == normalize
    hits = idx.search(q, 10)
    ref_i, ref_d = brute(unit(codes), unit(q), 10) if normalize else brute(codes, q, 10)
    for row, ri, rd in zip(hits, ref_i, ref_d):
        assert [p for p, _ in row] == [f"p{i}" for i in ri]
        np.testing.assert_allclose([d for _, d in row], rd, rtol=1e-4)


def test_approximate_index_recall():
    rng = np.random.default_rng(1)
    centers = rng.normal(size=(200, 32))
    codes = (centers[rng.integers(200, size=30000)] + 0.5 * rng.normal(size=(30000, 32))).astype(np.float32)
    q = codes[rng.choice(30000, 200)] + 0.1 * rng.normal(size=(200, 32)).astype(np.float32)
    ivf = build_faiss(codes, exact=False)
    _, got = ivf.search(q, 10)
    ref, _ = brute(codes, q, 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(got, ref)])
    assert recall >= 0.95


class FakeModel:
    """Encodes a photo as its mean colour: enough to test the bookkeeping."""
    backbone = "efficientnet-lite0"
    dim = 1280
    fingerprint = None

    def encode(self, feats, logits=None):
        return feats


def test_incremental_add_change_delete(tiny_images, tmp_path):
    d, names = tiny_images
    paths = [str(d / n) for n in names]
    idx = GalleryIndex(1280, "m")
    added, removed, errors = sync_index(idx, paths[:4], FakeModel(), cache_dir=tmp_path / "c", progress=False)
    assert (added, removed, errors, len(idx)) == (4, 0, [], 4)
    idx.save(tmp_path / "ix")
    idx = GalleryIndex.load(tmp_path / "ix")
    assert len(idx) == 4
    # change one file, delete one, add two
    from PIL import Image
    Image.new("RGB", (30, 30), (255, 0, 0)).save(paths[1])
    os.utime(paths[1], ns=(1, 10**18))
    os.remove(paths[0])
    added, removed, errors = sync_index(idx, paths[1:], FakeModel(), cache_dir=tmp_path / "c", progress=False)
    assert (added, removed, len(idx)) == (3, 1, 5)
    assert sorted(idx.paths) == sorted(paths[1:])
    red = idx.code_of(paths[1])
    assert idx.search(red, 1)[0][0] == paths[1]
    # nothing changed: nothing to do
    assert sync_index(idx, paths[1:], FakeModel(), cache_dir=tmp_path / "c", progress=False)[:2] == (0, 0)


def test_crash_during_save_leaves_previous_index(tmp_path):
    rng = np.random.default_rng(0)
    small = GalleryIndex(8, "m", rng.normal(size=(3, 8)), ["a", "b", "c"], [1, 2, 3], [1, 2, 3])
    small.save(tmp_path)
    # a child process starts saving a big index and is killed with SIGKILL mid-write
    code = textwrap.dedent(f"""
        import numpy as np, os, signal, threading
        from i2v.index import GalleryIndex
        big = GalleryIndex(8, "m", np.zeros((3_000_000, 8)), ["x"] * 3_000_000, [0] * 3_000_000, [0] * 3_000_000)
        threading.Timer(0.3, lambda: os.kill(os.getpid(), signal.SIGKILL)).start()
        big.save({str(tmp_path)!r})
    """)
    r = subprocess.run([sys.executable, "-c", code], cwd=os.path.dirname(os.path.dirname(__file__)))
    assert r.returncode == -9
    back = GalleryIndex.load(tmp_path)
    assert back.paths == ["a", "b", "c"]


def test_broken_and_missing_index(tmp_path):
    with pytest.raises(FileNotFoundError, match="no index"):
        GalleryIndex.load(tmp_path)
    (tmp_path / "index.npz").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="broken index"):
        GalleryIndex.load(tmp_path)
