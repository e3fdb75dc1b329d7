"""Regression tests for the red-team findings (issue "Security and reliability"): each reproduces
what went wrong and checks that it now fails safe. Numbers in the names follow the findings."""
import json
import os
import resource
import subprocess
import sys
import textwrap
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from i2v.cli import main

from conftest import REPO, sample_photos


def photo(path, seed=0, size=(64, 48), **save):
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(path, **save)
    return path


def http(url, data=None, headers=None, method=None):
    req = urllib.request.Request(url, data=data, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def raw_status(url, path, length):
    """Status of a POST that declares `length` body bytes and sends none."""
    import socket
    from urllib.parse import urlsplit

    u = urlsplit(url)
    with socket.create_connection((u.hostname, u.port), timeout=60) as s:
        s.sendall(f"POST {path} HTTP/1.1\r\nHost: {u.netloc}\r\nContent-Type: multipart/form-data; boundary=x\r\n"
                  f"Content-Length: {length}\r\n\r\n".encode())
        head = b""
        while b"\r\n" not in head:
            chunk = s.recv(200)
            if not chunk:
                break
            head += chunk
        return int(head.split()[1])


# -- 1. the app serves only thumbnails it wrote, never the gallery's folders ----------------------
@pytest.fixture(scope="module")
def hostile_gallery(tmp_path_factory):
    """A photo folder with a secret, an HTML page and a symlinked photo beside the photos, indexed."""
    from i2v.appserver import running_app

    root = tmp_path_factory.mktemp("hostile")
    h = root / "H"
    (h / ".ssh").mkdir(parents=True)
    photo(h / "x.jpg", 1)
    (h / ".ssh" / "id_rsa").write_text("KEY-SECRET")
    (h / "page.html").write_text("<script>alert(1)</script>")
    outside = root / "outside"
    outside.mkdir()
    photo(outside / "target.jpg", 2)
    (outside / "diary.txt").write_text("DIARY-SECRET")
    (h / "link.jpg").symlink_to(outside / "target.jpg")
    env = {"I2V_CACHE": str(root / "cache")}
    subprocess.run([sys.executable, "-m", "i2v", "index", str(h), "--out", str(root / "IX")], cwd=REPO,
                   env=dict(os.environ, **env), check=True, capture_output=True)
    with running_app("--gallery", root / "IX", home=root / "home", env=env) as (url, _):
        yield url, root


def test_1_no_folder_of_the_gallery_is_served(hostile_gallery):
    from gradio_client import Client

    url, root = hostile_gallery
    for f in (root / "H" / ".ssh" / "id_rsa", root / "H" / "page.html", root / "outside" / "diary.txt",
              root / "H" / "x.jpg", root / "outside" / "target.jpg", Path("/etc/passwd")):
        status, body = http(url + "gradio_api/file=" + str(f))
        assert status in (403, 404) and b"SECRET" not in body and b"<script>" not in body, f
    hits, _ = Client(url, verbose=False).predict("dog", None, 2, api_name="/search")
    assert len(hits) == 2  # results still arrive: as thumbnails the app wrote into its own folder
    thumbs = list((root / "home" / "thumbs").glob("*.jpg"))
    assert len(thumbs) == 2 and all(Image.open(t).size[0] <= 512 for t in thumbs)


def test_1_an_index_naming_root_files_opens_nothing(tmp_path):
    from i2v.service import Service

    s = Service(home=tmp_path, progress=False)
    assert s.allowed_dirs() == [str(tmp_path / "thumbs")]
    assert s.thumbnail("/etc/passwd") is None  # not an image: no thumbnail, nothing served
    assert not list((tmp_path / "thumbs").iterdir())


# -- 2. public mode: a session's photos are its own, re-encoded, deleted with it ----------------------
def exif_photo(path):
    im = Image.fromarray(np.random.default_rng(5).integers(0, 255, (60, 80, 3), dtype=np.uint8))
    exif = Image.Exif()
    exif[0x013B] = "Secret Artist"  # Artist
    exif[0x8825] = {2: (48.0, 51.0, 29.0)}  # GPS: latitude
    im.save(path, exif=exif)
    return path


def test_2_public_sessions_are_private_reencoded_and_deleted(tmp_path):
    from i2v.service import Service, UserError

    s = Service(home=tmp_path / "home", public=True, progress=False)
    mine = exif_photo(tmp_path / "mine.jpg")
    polyglot = tmp_path / "poly.jpg"
    polyglot.write_bytes(mine.read_bytes() + b"<html><script>alert(1)</script></html>")
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0" + b"\x00" * 50)
    added, already, errors = s.add_photos([str(mine), str(broken)], session="alice")
    assert (added, already) == (1, 0) and errors and "broken.jpg" in errors[0]
    assert s.add_photos([str(polyglot)], session="alice")[:2] == (0, 1)  # same pixels: already there
    stored = list(s.store("alice").photos_dir.iterdir())
    assert len(stored) == 1  # the broken file was never kept
    data = stored[0].read_bytes()
    assert b"Secret Artist" not in data and b"<script>" not in data and not Image.open(stored[0]).getexif()
    # bob sees the gallery, never alice's photo
    hits, _, _ = s.search("", str(mine), 100, session="bob")
    assert s.thumbnail(str(stored[0])) not in [p for p, _ in hits]
    assert s.counts("bob")[1] == 0 and s.my_photos("bob") == []
    hits, _, _ = s.search("", str(mine), 1, session="alice")
    assert hits[0][0] == s.thumbnail(str(stored[0]))
    with pytest.raises(UserError):
        s.add_photos([str(mine)], session=None)  # no session, no store
    folder = s.store("alice").folder
    s.end_session("alice")
    assert not folder.exists() and s.counts("alice")[1] == 0


def test_2_local_mode_keeps_photos_across_restarts(tmp_path):
    from i2v.service import Service

    s = Service(home=tmp_path, progress=False)
    s.add_photos([str(exif_photo(tmp_path / "a.jpg"))])
    assert Service(home=tmp_path, progress=False).counts()[1] == 1


# -- 3. decode memory: refused from the header, thread-safe -------------------------------------------
def big_grey_png(path, side=9900):
    """A ~100 kB PNG declaring side x side grey pixels (all zero: compresses to nothing)."""
    import zlib

    raw = zlib.compress(b"\x00" * ((side + 1) * side), 9)

    def chunk(tag, data):
        import struct

        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    import struct

    head = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", head) + chunk(b"IDAT", raw) + chunk(b"IEND", b""))
    return path


def test_3_big_grey_png_is_refused_without_decoding(tmp_path):
    png = big_grey_png(tmp_path / "grey.png")
    small = photo(tmp_path / "small.png")
    code = textwrap.dedent(f"""
        import resource, sys
        from i2v.cli import main
        main(["summarize", {str(small)!r}])  # model and network loaded: what follows is the photo's cost
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        rc = main(["summarize", {str(png)!r}])
        grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
        print("RC", rc, "GROWN_MB", round(grown))
    """)
    t = time.time()
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    line = next(ln for ln in out.stdout.splitlines() if ln.startswith("RC "))
    rc, grown = line.split()[1], float(line.split()[3])
    assert rc == "1" and "too large" in out.stderr and grown < 150, (out.stdout, out.stderr)
    assert time.time() - t < 60


def test_3_pixel_check_holds_under_threads(tmp_path):
    from i2v.features import ImageError, load_image

    png = big_grey_png(tmp_path / "grey.png", 12000)  # 144 MP
    passed, lock = [], threading.Lock()

    def hammer():
        for _ in range(200):
            try:
                load_image(str(png))
                with lock:
                    passed.append(1)
            except ImageError:
                pass

    threads = [threading.Thread(target=hammer) for _ in range(8)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert not passed


def test_3_other_formats_are_not_opened(tmp_path):
    from i2v.features import ImageError, load_image

    eps = tmp_path / "x.jpg"
    eps.write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n")
    with pytest.raises(ImageError, match="not a readable image"):
        load_image(str(eps))


# -- 4. cross-site writes and huge bodies --------------------------------------------------------------
def test_4_cross_origin_writes_and_huge_bodies_are_refused(server):
    boundary = "x"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"a.jpg\"\r\n"
            f"Content-Type: image/jpeg\r\n\r\nAAAA\r\n--{boundary}--\r\n").encode()
    ctype = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    status, _ = http(server + "gradio_api/upload", body, dict(ctype, Origin="http://evil.example"))
    assert status == 403
    status, _ = http(server + "gradio_api/upload", body, dict(ctype, Origin="null"))
    assert status == 403
    status, _ = http(server + "gradio_api/upload", body, dict(ctype, Origin=server.rstrip("/")))
    assert status == 200  # the app's own page may upload
    assert raw_status(server, "/gradio_api/call/search", 2 * 1024 * 1024) == 413  # not read, refused
    assert raw_status(server, "/gradio_api/upload", 101 * 1024 * 1024) == 413  # refused from the header alone
    with urllib.request.urlopen(server, timeout=10) as r:
        assert r.headers["X-Content-Type-Options"] == "nosniff"
        assert "frame-ancestors" in r.headers["Content-Security-Policy"]


# -- 5. damaged indexes: one clear line in the CLI; the app starts -----------------------------------
def damaged_indexes(tmp_path):
    from i2v.index import GalleryIndex

    good = tmp_path / "good"
    GalleryIndex(4, "learn-all", np.ones((2, 4)), ["a", "b"], [1, 1], [1, 1]).save(good)
    raw = (good / "index.npz").read_bytes()
    cases = {"empty": b"", "half": raw[: len(raw) // 2]}
    with np.load(good / "index.npz") as z:
        arrays = {k: z[k] for k in z.files}
    variants = {"header-list": dict(arrays, header=np.array(json.dumps([1, 2]))),
                "narrow-codes": dict(arrays, codes=np.ones((2, 3), np.float32)),
                "huge-shape": None}
    out = {}
    for name, data in cases.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "index.npz").write_bytes(data)
        out[name] = tmp_path / name
    for name, arrays_ in variants.items():
        (tmp_path / name).mkdir()
        if arrays_ is None:  # a member whose header declares 10^12 floats
            np.savez(tmp_path / name / "index.npz", **arrays)
            import zipfile

            src = tmp_path / name / "index.npz"
            with zipfile.ZipFile(src) as z:
                members = {n: z.read(n) for n in z.namelist()}
            members["codes.npy"] = members["codes.npy"].replace(b"(2, 4)", b"(1000000000000, 4)")
            with zipfile.ZipFile(src, "w") as z:
                for n, d in members.items():
                    z.writestr(n, d)
        else:
            np.savez(tmp_path / name / "index.npz", **arrays_)
        out[name] = tmp_path / name
    return out


def test_5_cli_says_one_line_for_a_damaged_index(tmp_path, capsys):
    for name, folder in damaged_indexes(tmp_path).items():
        rc = main(["search", "dog", "--index", str(folder)])
        err = capsys.readouterr().err
        assert rc == 2 and err.count("\n") == 1 and "broken index file" in err and "Traceback" not in err, (name, err)


def test_5_app_starts_over_damaged_indexes(tmp_path, capsys):
    from i2v.service import Service

    home = tmp_path / "home"
    s = Service(home=home, progress=False)
    s.add_photos([str(photo(tmp_path / "p.png", 3))])
    (home / "user-index" / "index.npz").write_bytes(b"")
    raw = (home / "demo-index" / "index.npz").read_bytes()
    (home / "demo-index" / "index.npz").write_bytes(raw[: len(raw) // 2])
    back = Service(home=home, progress=False)  # rebuilt from the demo photos and the stored uploads
    assert back.counts() == s.counts()
    broken = damaged_indexes(tmp_path / "d")["half"]
    s3 = Service(home=home, gallery=str(broken), progress=False)
    assert len(s3.gallery) == len(s.gallery)  # falls back to the demo gallery, with a warning
    assert "serving the built-in demo gallery" in capsys.readouterr().err


# -- 6, 7, 10. odd file names, symlink loops, unreadable folders --------------------------------------
def test_6_7_odd_names_and_symlink_loops_do_not_abort_index(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("I2V_CACHE", str(tmp_path / "cache"))
    g = tmp_path / "G"
    g.mkdir()
    photo(g / "ok.jpg", 1)
    photo(os.fsdecode(os.fsencode(str(g)) + b"/caf\xe9.jpg"), 2)  # not UTF-8
    photo(g / "a\x1b]0;title\x07.jpg", 3)  # control characters
    os.symlink("loop.jpg", g / "loop.jpg")
    assert main(["index", str(g), "--out", str(tmp_path / "IX")]) == 0
    out, err = capsys.readouterr()
    summary = json.loads(out)
    assert summary["photos"] == 3 and summary["skipped"] == 1
    assert "loop.jpg" in err and "\x1b" not in err
    assert main(["search", "dog", "--index", str(tmp_path / "IX"), "-k", "3"]) == 0
    out, _ = capsys.readouterr()
    assert "\x1b" not in out and out.count("\n") == 3


def test_6_lone_surrogate_query_is_a_clear_error():
    from i2v.pipeline import UserError, load_model, query_vector

    for text in ("dog \udce9", "\udce9", "dog\x00"):
        with pytest.raises(UserError, match="not text"):
            query_vector(load_model(), text)


def test_10_unreadable_subfolder_keeps_its_entries(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("I2V_CACHE", str(tmp_path / "cache"))
    g = tmp_path / "G"
    (g / "locked").mkdir(parents=True)
    photo(g / "a.jpg", 1)
    photo(g / "locked" / "b.jpg", 2)
    assert main(["index", str(g), "--out", str(tmp_path / "IX")]) == 0
    assert json.loads(capsys.readouterr().out)["photos"] == 2
    real_scandir = os.scandir

    def scandir(path="."):
        if os.fspath(path).endswith("locked"):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)  # root ignores chmod 000; this is what it looks like
    assert main(["index", str(g), "--out", str(tmp_path / "IX")]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["photos"] == 2 and json.loads(out)["removed"] == 0
    assert "cannot list" in err and "locked" in err


# -- 8. a full disk: the cache is optional; a full --out keeps the old index, no temp files -----------
def test_8_full_disk(tmp_path, capsys, monkeypatch):
    import i2v.atomic
    from i2v.features import extract
    from i2v.index import GalleryIndex

    monkeypatch.setenv("I2V_CACHE", str(tmp_path / "cache"))
    g = tmp_path / "G"
    g.mkdir()
    for i in range(3):
        photo(g / f"p{i}.jpg", i)
    real = i2v.atomic.atomic_path

    def full(dest):
        if "cache" in str(dest):
            raise OSError(28, "No space left on device", str(dest))
        return real(dest)

    monkeypatch.setattr(i2v.atomic, "atomic_path", full)
    import i2v.features

    monkeypatch.setattr(i2v.features, "atomic_path", full)
    with pytest.warns(RuntimeWarning, match="not writable"):
        feats, _, ok, errors = extract([str(p) for p in sorted(g.iterdir())], progress=False)
    assert len(ok) == 3 and not errors
    monkeypatch.setattr(i2v.features, "atomic_path", real)
    assert main(["index", str(g), "--out", str(tmp_path / "IX")]) == 0
    capsys.readouterr()
    photo(g / "p9.jpg", 9)
    import i2v.index

    def boom(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(i2v.index.np, "savez", boom)
    assert main(["index", str(g), "--out", str(tmp_path / "IX")]) == 2
    err = capsys.readouterr().err
    assert "No space left" in err and str(tmp_path / "IX") in err
    monkeypatch.undo()
    assert len(GalleryIndex.load(tmp_path / "IX")) == 3
    assert [f.name for f in (tmp_path / "IX").iterdir() if f.name != ".lock"] == ["index.npz"]


# -- 9. two index runs on one --out never lose an update ----------------------------------------------
def test_9_index_runs_take_turns(tmp_path):
    from i2v.index import GalleryIndex
    from i2v.pipeline import index_lock

    g = tmp_path / "G"
    g.mkdir()
    for i in range(3):
        photo(g / f"p{i}.jpg", i)
    env = dict(os.environ, I2V_CACHE=str(tmp_path / "cache"))
    cmd = [sys.executable, "-m", "i2v", "index", str(g), "--out", str(tmp_path / "IX")]
    with index_lock(tmp_path / "IX"):
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(8)
        assert proc.poll() is None  # waits for the lock holder
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0 and "waiting for another index run" in err
    assert json.loads(out)["photos"] == 3


# -- 11. another model's index ------------------------------------------------------------------------
def test_11_search_with_another_model_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("I2V_CACHE", str(tmp_path / "cache"))
    g = tmp_path / "G"
    g.mkdir()
    photo(g / "a.jpg")
    assert main(["index", str(g), "--out", str(tmp_path / "IX")]) == 0
    capsys.readouterr()
    assert main(["search", "dog", "--index", str(tmp_path / "IX"), "--model", "simple"]) == 2
    err = capsys.readouterr().err
    assert "was not built with model 'simple'" in err and "--model simple" in err


# -- 12. tampered checkpoints: one line naming the file and the field ----------------------------------
def tampered(tmp_path):
    import shutil

    src = REPO / "checkpoints" / "learn-all"
    with np.load(src / "arrays.npz") as z:
        arrays = {k: z[k] for k in z.files}
    config = json.loads((src / "config.json").read_text())
    V = len(config["vocab"]["words"])
    cases = {
        "D-1d": ({"D": arrays["D"].ravel()}, {}, "D: shape"),
        "config-list": (None, [1, 2], "expected an object"),
        "vocab-null": ({}, {"vocab": None}, "vocab"),
        "nan-D": ({"D": np.where(np.arange(V) == 3, np.nan, arrays["D"])}, {}, "D: has NaN"),
        "nan-R": ({"R": arrays["R"] * np.nan}, {}, "R: has NaN"),
        "ridge": ({}, {"omp_ridge": -1e9}, "omp_ridge"),
        "scale": ({}, {"code_scale": float("nan")}, "code_scale"),
        "dup-vocab": ({}, {"vocab": {"words": ["dog"] * V, "counts": [1] * V}}, "not unique"),
    }
    out = {}
    for name, (arr, cfg, msg) in cases.items():
        d = tmp_path / name
        shutil.copytree(src, d)
        if arr:
            np.savez(d / "arrays.npz", **dict(arrays, **arr))
        (d / "config.json").write_text(json.dumps(cfg if isinstance(cfg, list) else dict(config, **cfg)))
        out[name] = (d, msg)
    return out


def test_12_tampered_checkpoints_are_refused_at_load(tmp_path, capsys):
    china = str(sample_photos()[0])
    for name, (folder, msg) in tampered(tmp_path).items():
        rc = main(["summarize", china, "--model", str(folder)])
        err = capsys.readouterr().err
        assert rc == 2 and err.count("\n") == 1 and msg in err and str(folder) in err, (name, err)


# -- 13. adding photos does not slow down with every add ----------------------------------------------
def test_13_adds_write_no_cache_shards(tmp_path, monkeypatch):
    from i2v.service import Service

    monkeypatch.setenv("I2V_CACHE", str(tmp_path / "cache"))
    s = Service(home=tmp_path / "home", progress=False)
    shards = set((tmp_path / "cache").rglob("shard-*.npz"))
    for i in range(5):
        s.add_photos([str(photo(tmp_path / f"u{i}.png", 10 + i))])
    assert set((tmp_path / "cache").rglob("shard-*.npz")) == shards and s.counts()[1] == 5


def test_2_public_app_two_visitors(tmp_path):
    """Through the HTTP API of an app started with --public: a photo one client adds is not
    returned to another client, and the first client's thumbnails carry no EXIF."""
    from gradio_client import Client, handle_file

    from i2v.appserver import running_app

    mine = exif_photo(tmp_path / "mine.jpg")
    with running_app("--public", home=tmp_path / "home") as (url, _):
        alice, bob = Client(url, verbose=False), Client(url, verbose=False)
        msg, grid, count = alice.predict([handle_file(str(mine))], api_name="/add_photos")
        assert "Added 1" in msg and "Your photos: 1" in count and "this browser session only" in count
        a_hits, _ = alice.predict("", handle_file(str(mine)), 1, api_name="/search")
        b_hits, _ = bob.predict("", handle_file(str(mine)), 60, api_name="/search")
        own = Path(a_hits[0]["image"]).name
        assert own not in [Path(h["image"]).name for h in b_hits] and len(b_hits) == 49
        assert not Image.open(a_hits[0]["image"]).getexif()
        sessions = list((tmp_path / "home" / "sessions").iterdir())
        assert len(sessions) == 1  # only alice has a store
