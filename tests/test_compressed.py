"""The compressed index (IVF-PQ + exact re-ranking from disk) against exact search."""
import json
import os

import numpy as np
import pytest

from i2v.compressed import build_compressed
from i2v.index import GalleryIndex
from i2v.models import normalize_rows


def clustered(n, d, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(200, d))
    return normalize_rows(centers[rng.integers(200, size=n)] + 0.4 * rng.normal(size=(n, d))).astype(np.float32)


def test_recall_against_brute_force_and_odd_paths(tmp_path):
    codes = clustered(20_000, 32)
    paths = [f"/photos/{i}.jpg" for i in range(len(codes))]
    paths[7] = os.fsdecode(b"/photos/caf\xe9.jpg")  # not UTF-8
    shards = ((paths[s:s + 5000], codes[s:s + 5000]) for s in range(0, len(codes), 5000))
    ix = build_compressed(shards, tmp_path / "ix", dim=32, model_name="m", train_size=8000)
    assert len(ix) == 20_000 and ix.path_of(7) == paths[7] and ix.path_of(19_999) == paths[-1]
    rng = np.random.default_rng(1)
    queries = normalize_rows(codes[rng.integers(len(codes), size=100)] + 0.1 * rng.normal(size=(100, 32)))
    exact = np.argsort(((queries[:, None] - codes[None]) ** 2).sum(-1), axis=1)[:, :10]  # naive reference
    got = ix.search_rows(queries, 10)
    recall = np.mean([len({r for r, _ in g} & set(e)) / 10 for g, e in zip(got, exact)])
    assert recall >= 0.95
    hits = ix.search(queries[0], 3)
    assert [p for p, _ in hits] == [paths[r] for r, _ in got[0][:3]]
    assert [d for _, d in hits] == sorted(d for _, d in hits)


def test_cli_compress_gives_the_exact_results_on_a_small_collection(tmp_path, capsys, monkeypatch):
    from conftest import REPO
    from i2v.cli import main

    monkeypatch.setenv("I2V_CACHE", str(tmp_path / "cache"))
    assert main(["index", str(REPO / "demo" / "gallery"), "--out", str(tmp_path / "ix")]) == 0
    capsys.readouterr()
    assert main(["compress", str(tmp_path / "ix"), "--out", str(tmp_path / "ixc")]) == 0
    assert json.loads(capsys.readouterr().out)["photos"] == 49
    assert GalleryIndex.load(tmp_path / "ixc").compressed
    results = []
    for folder in ("ix", "ixc"):  # fewer photos than the shortlist: re-ranking makes it exact
        assert main(["search", "dog + grass", "--index", str(tmp_path / folder), "-k", "8", "--json"]) == 0
        results.append(json.loads(capsys.readouterr().out))
    assert [h["path"] for h in results[0]] == [h["path"] for h in results[1]]
    np.testing.assert_allclose([h["distance"] for h in results[0]], [h["distance"] for h in results[1]], atol=2e-3)
    # a compressed folder is search-only
    assert main(["index", str(REPO / "demo" / "gallery"), "--out", str(tmp_path / "ixc")]) == 2
    assert "compressed index" in capsys.readouterr().err
    # rebuilding replaces the files of the previous generation
    assert main(["compress", str(tmp_path / "ix"), "--out", str(tmp_path / "ixc")]) == 0
    names = [f.name for f in (tmp_path / "ixc").iterdir() if not f.name.startswith(".")]
    assert sorted(n.split("-")[0] for n in names) == ["codes", "index.npz", "ivfpq", "offsets", "paths"]


def test_app_serves_a_compressed_gallery(tmp_path, monkeypatch):
    from conftest import REPO
    from i2v.pipeline import compress_index, index_folders
    from i2v.service import Service

    monkeypatch.setenv("I2V_CACHE", str(tmp_path / "cache"))
    index_folders([REPO / "demo" / "gallery"], tmp_path / "ix", log=lambda m: None)
    compress_index(tmp_path / "ix", tmp_path / "ixc", log=lambda m: None)
    s = Service(home=tmp_path / "home", gallery=str(tmp_path / "ixc"), progress=False)
    hits, _, _ = s.search("dog", None, 5)
    assert len(hits) == 5 and all(p and p.endswith(".jpg") for p, _ in hits)


def write_shard(path, rows, d=4):
    """A Parquet shard like the Ray engine's: (path, size, mtime, code, error) rows."""
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    codes = [list(map(float, c)) if c is not None else [0.0] * d for _, _, _, c, _ in rows]
    pq.write_table(pa.table({"path": [r[0] for r in rows], "size": [r[1] for r in rows],
                             "mtime": [r[2] for r in rows], "code": pa.array(codes, pa.large_list(pa.float32())),
                             "error": [r[4] for r in rows]}), path)


def test_shard_rows_are_picked_once_per_current_file_and_compacted(tmp_path):
    """iter_codes against a naive reference: the current version of each listed file, once
    (duplicates from retried tasks), failures reported, changed and gone files left out, photos
    under an unlistable folder kept (newest), a torn shard skipped, and compaction when most
    rows are old keeping exactly the current rows."""
    from i2v.rayengine import iter_codes

    c = lambda v: [v, 0, 0, 0]  # noqa: E731
    s = tmp_path / "shards"
    write_shard(s / "run-1" / "a.parquet", [("/g/a.jpg", 1, 10, c(1), ""), ("/g/b.jpg", 1, 10, c(2), ""),
                                            ("/g/gone.jpg", 1, 10, c(3), ""), ("/g/bad.jpg", 1, 10, None, "not a photo"),
                                            ("/x/kept.jpg", 1, 10, c(8), "")] +
                [(f"/g/c{i}.jpg", 1, 10, c(10 + i), "") for i in range(3)])
    write_shard(s / "run-1" / "b.parquet", [("/g/a.jpg", 1, 10, c(1), "")])  # a retried task's duplicate
    write_shard(s / "run-2" / "a.parquet", [("/g/b.jpg", 2, 20, c(5), ""), ("/x/kept.jpg", 1, 20, c(9), "")])
    (s / "run-2" / "torn.parquet").write_bytes(b"PAR1 torn")
    files = [("/g/a.jpg", 1, 10), ("/g/b.jpg", 2, 20), ("/g/bad.jpg", 1, 10), ("/g/new.jpg", 1, 30)] + \
        [(f"/g/c{i}.jpg", 1, 10) for i in range(3)]
    count, errors, chunks, stale = iter_codes(s, files, dim=4, keep_under=["/x"], chunk=1)
    got = {p: float(code[0]) for paths, codes in chunks for p, code in zip(paths, codes)}
    assert got == {"/g/a.jpg": 1.0, "/g/b.jpg": 5.0, "/x/kept.jpg": 9.0, "/g/c0.jpg": 10.0, "/g/c1.jpg": 11.0,
                   "/g/c2.jpg": 12.0} and count == 6
    assert sorted(errors) == ["/g/bad.jpg: not a photo", "/g/new.jpg: not encoded"]
    assert stale == 5  # the old b, gone, bad, the duplicate a, the old kept: fewer than the current rows
    assert len(list(s.rglob("*.parquet"))) == 4  # nothing rewritten

    count, errors, chunks, stale = iter_codes(s, files[:1], dim=4)  # most rows old now: compacted
    assert stale < 0 and [(p, float(k[0])) for ps, ks in chunks for p, k in zip(ps, ks)] == [("/g/a.jpg", 1.0)]
    left = list(s.rglob("*.parquet"))
    assert len(left) == 2 and not list(s.rglob("*.tmp"))  # the compacted file and the torn one (unreadable)
    count, errors, chunks, stale = iter_codes(s, files[:1], dim=4)
    assert count == 1 and stale == 0 and [p for ps, _ in chunks for p in ps] == ["/g/a.jpg"]
