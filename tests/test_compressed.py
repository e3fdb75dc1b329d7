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
