"""The CLI and the app answer the same queries and photos with the same words, photos and errors
(both run over i2v.pipeline; this test keeps them from drifting apart again)."""
import json
import re
from pathlib import Path

import pytest

from i2v.cli import main
from i2v.service import thumbnail_key

from conftest import REPO, sample_photos

PHOTO = str(REPO / "demo" / "gallery" / "open" / "scikit-image-chelsea.jpg")
SEARCHES = [  # (query, photo, k)
    ("dog + grass", None, 6), ("snow + young", None, 6), ("dog - leash + ball", None, 6),
    ("two dogs running on the beach", None, 6), ("2*dog + 0.5 * grass", None, 6), ("beach", None, 3),
    ("[photo] - snow + beach", PHOTO, 5), ("", PHOTO, 4), ("grass", PHOTO, 4),
    # errors
    ("zzzq + dog", None, 6), ("", None, 6), ("+", None, 6), ("dog - dog", None, 6), ("[photo] + dog", None, 6),
    ("9" * 400 + "*dog", None, 6), ("dog", None, 0), ("dog", None, 101),
]
NEIGHBOURS = [("yellow", 5), ("beach", 3), ("qwxzv", 5), ("two words", 5), ("yellow", 0)]


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    """A fresh app (its own data folder, so no other test's uploads) and a client to it."""
    from gradio_client import Client

    from i2v.appserver import running_app

    home = tmp_path_factory.mktemp("parity")
    with running_app(home=home) as (url, _):
        yield Client(url, verbose=False), home


def cli(capsys, *argv):
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def app_call(client, *args, api_name):
    try:
        return client.predict(*args, api_name=api_name), None
    except Exception as e:  # gradio_client's AppError carries the gr.Error message
        return None, str(e)


def error_line(err):
    lines = [ln for ln in err.splitlines() if ln.startswith("error: ")]
    assert len(lines) == 1, err
    return lines[0][len("error: "):]


@pytest.mark.parametrize("query,photo,k", SEARCHES)
def test_search_same_photos_or_same_error(app, capsys, query, photo, k):
    from gradio_client import handle_file

    client, home = app
    argv = ["search", query, "--index", home / "demo-index", "-k", k, "--json"] + (["--photo", photo] if photo else [])
    rc, out, err = cli(capsys, *argv)
    res, app_err = app_call(client, query, handle_file(photo) if photo else None, k, api_name="/search")
    if rc == 0:
        assert app_err is None, app_err
        cli_hits = [(thumbnail_key(h["path"]) + ".jpg", f"distance {h['distance']:.2f}") for h in json.loads(out)]
        app_hits = [(Path(h["image"]["path"] if isinstance(h["image"], dict) else h["image"]).name, h["caption"])
                    for h in res[0]]
        assert cli_hits == app_hits and len(cli_hits) == k
        assert err.strip().splitlines()[-1].split("searched for: ")[1] in res[1]
    else:
        assert rc == 2 and app_err is not None
        assert error_line(err) == app_err


@pytest.mark.parametrize("photo", [PHOTO, str(sample_photos()[1]), "broken"])
def test_summarize_same_words_or_same_error(app, capsys, tmp_path, photo):
    from gradio_client import handle_file

    client, _ = app
    if photo == "broken":
        photo = tmp_path / "broken.jpg"
        photo.write_bytes(b"\xff\xd8\xff\xe0 truncated jpeg")
    rc, out, err = cli(capsys, "summarize", photo, "-k", 3, "--json")
    res, app_err = app_call(client, handle_file(str(photo)), 3, "learn-all", api_name="/summarize")
    if rc == 0:
        words = [(w["word"], f"{w['weight']:.2f}") for w in json.loads(out)[0]["words"]]
        assert words == re.findall(r"\*\*(\w+)\*\* \(([-\d.]+)\)", res[1])
    else:
        assert app_err is not None and err.strip().endswith(": " + app_err)


@pytest.mark.parametrize("word,k", NEIGHBOURS)
def test_neighbours_same_words_or_same_error(app, capsys, word, k):
    client, _ = app
    rc, out, err = cli(capsys, "neighbours", word, "-k", k, "--json")
    res, app_err = app_call(client, word, k, api_name="/neighbours")
    if rc == 0:
        nb = json.loads(out)
        rows = res[0]["data"]
        assert [r[1] for r in rows if r[1]] == [w for w, _ in nb["visual"]]
        assert [r[4] for r in rows if r[4]] == [w for w, _ in nb["text"]]
    else:
        assert app_err is not None and error_line(err) == app_err
