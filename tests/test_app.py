"""The app: handlers as plain functions, a gradio_client round trip per api_name, and a real
browser (Debian chromium driven by Playwright) clicking through the three main tabs."""
import os
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import REPO, sample_photos

ARTIFACTS = REPO / "artifacts" / "screenshots"


@pytest.fixture(scope="module")
def app_module(tmp_path_factory):
    os.environ["I2V_HOME"] = str(tmp_path_factory.mktemp("home"))
    sys.path.insert(0, str(REPO))
    import app
    from i2v.service import Service

    app.SERVICE = Service(home=os.environ["I2V_HOME"], progress=False)
    yield app
    app.SERVICE = None


def test_handlers_as_functions(app_module, tmp_path):
    import gradio as gr

    china, flower = map(str, sample_photos())
    words, fit, evidence = app_module.summarize(flower, 3, "learn-all")
    assert 1 <= len(words) <= 3 and "account for" in fit and len(evidence) == 6
    words5, _, _ = app_module.summarize(flower, 5, "simple")
    assert len(words5) <= 5
    for model in ("weak-tag", "baseline"):
        assert app_module.summarize(china, 3, model)[0]
    hits, status = app_module.search("dog + grass", None, 8)
    assert len(hits) == 8 and "dog" in status
    hits, status = app_module.search("[photo] - snow + beach", china, 5)
    assert len(hits) == 5
    rows, fig, note = app_module.neighbours("yellow", 10)
    assert len(rows) == 10 and rows[0][1] and rows[0][4] == "red" and fig is not None
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"%PDF-1.4 not an image")
    for call in (lambda: app_module.summarize(str(bad), 3, None), lambda: app_module.summarize(None, 3, None),
                 lambda: app_module.search("", None, 5), lambda: app_module.search("+", None, 5),
                 lambda: app_module.search("zzzq + dog", None, 5), lambda: app_module.neighbours("", 10),
                 lambda: app_module.summarize(flower, 99, None), lambda: app_module.add_photos([])):
        with pytest.raises(gr.Error):
            call()
    from PIL import Image, ImageOps

    mine = tmp_path / "my holiday.jpg"
    ImageOps.mirror(Image.open(china)).save(mine)  # a photo that is not in the gallery
    n_before = app_module.SERVICE.counts()[1]
    msg, grid, count = app_module.add_photos([str(mine), str(bad)])
    assert "Added 1" in msg and "bad.jpg" in msg and app_module.SERVICE.counts()[1] == n_before + 1
    assert len(grid) == n_before + 1 and f"Your photos: {n_before + 1}" in count
    stored = app_module.SERVICE.store().index.paths[-1]
    assert Path(stored).parent.name == "uploads" and "holiday" not in Path(stored).name  # content-addressed
    # the result is served as a thumbnail the app wrote, never the stored file itself
    assert app_module.search("", str(mine), 1)[0][0][0] == app_module.SERVICE.thumbnail(stored)
    msg, _, _ = app_module.add_photos([str(mine)])
    assert "Added 0" in msg and "1 already there" in msg
    msg, grid, count, _ = app_module.delete_photo(len(grid) - 1)
    assert "Deleted 1" in msg and f"Your photos: {n_before}" in count and not Path(stored).exists()


def test_gradio_client_round_trip(server, tmp_path):
    from gradio_client import Client, handle_file

    client = Client(server, verbose=False)
    flower = str(sample_photos()[1])
    words, fit, evidence = client.predict(handle_file(flower), 3, "learn-all", api_name="/summarize")
    assert 1 <= len(words["confidences"]) <= 3 and "account for" in fit and evidence
    hits, status = client.predict("dog + grass", None, 6, api_name="/search")
    assert len(hits) == 6 and "dog" in status
    table, plot, note = client.predict("yellow", 10, api_name="/neighbours")
    assert len(table["data"]) == 10
    msg = client.predict([handle_file(flower)], api_name="/add_photos")[0]
    assert "Added 1" in msg
    with pytest.raises(Exception, match="unknown word"):
        client.predict("zzzq + dog", None, 6, api_name="/search")
    # the server is still answering after the error
    assert client.predict("snow", None, 3, api_name="/search")[0]


def test_refuses_files_outside_the_gallery(server):
    for path in ("/etc/passwd", str(REPO / "app.py"), "../../etc/passwd"):
        for prefix in ("gradio_api/file=", "file="):
            try:
                with urllib.request.urlopen(server + prefix + path, timeout=5) as r:
                    body = r.read()
                assert b"root:" not in body and b"import gradio" not in body
            except urllib.error.HTTPError as e:
                assert e.code in (403, 404, 400)


def wait_for_images(page, selector, n, timeout):
    """Wait until at least `n` images inside `selector` have loaded."""
    page.wait_for_function(
        f"Array.from(document.querySelectorAll('{selector} img')).filter(i => i.complete && i.naturalWidth > 0)"
        f".length >= {n}", timeout=timeout)


def text_includes(page, selector, text, timeout=60_000):
    page.wait_for_function(f"document.querySelector('{selector}') && "
                           f"document.querySelector('{selector}').innerText.includes({text!r})", timeout=timeout)


def launch(p):
    if not Path("/usr/bin/chromium").exists():
        pytest.skip("Debian chromium is not installed (tests/run.sh installs it)")
    return p.chromium.launch(executable_path="/usr/bin/chromium", args=[
        "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"])


def open_page(browser, url, width, height):
    page = browser.new_page(viewport={"width": width, "height": height})
    page.goto(url, wait_until="load")  # the session heartbeat keeps a stream open: never "networkidle"
    page.wait_for_selector("#summ-go", timeout=60_000)
    return page


def test_real_browser(server):
    """The three tasks, the first answer's time (written to artifacts/), a bad upload clearing the
    old answer, and "My photos": add, add again ("already there"), delete."""
    import json

    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    timings = {}
    with sync_playwright() as p:
        browser = launch(p)
        page = open_page(browser, server, 1280, 1000)
        assert "image2vec" in page.title() + page.content()
        page.screenshot(path=str(ARTIFACTS / "0-start.png"))
        # 1. upload a photo -> its words appear; the time of this first answer is recorded
        page.locator("#summ-photo input[type=file]").set_input_files(str(REPO / "demo/gallery/cc-by-sa/kphotoalbum-donna.jpg"))
        page.wait_for_timeout(1000)
        t = time.perf_counter()
        page.click("#summ-go")
        text_includes(page, "#summ-fit", "account for")
        timings["first_summarize_s"] = round(time.perf_counter() - t, 3)
        labels = page.locator("#summ-words").inner_text()
        assert len([ln for ln in labels.splitlines() if ln.strip()]) >= 3 and "dog" in labels
        wait_for_images(page, "#summ-evidence", 3, 30_000)
        assert "distance" in page.locator("#summ-evidence").inner_text()  # numbers carry a label
        page.screenshot(path=str(ARTIFACTS / "1-summarize.png"), full_page=True)
        # 1b. a bad upload: the old answer goes, the message stands where the answer was
        bad = ARTIFACTS / "not-a-photo.jpg"
        bad.write_bytes(b"%PDF-1.4 this is not an image")
        page.locator("#summ-photo button[aria-label='Remove Image']").click()
        page.locator("#summ-photo input[type=file]").set_input_files(str(bad))
        page.wait_for_timeout(1000)
        page.click("#summ-go")
        text_includes(page, "#summ-fit", "Could not answer")
        assert "dog" not in page.locator("#summ-words").inner_text()
        assert page.locator("#summ-evidence img").count() == 0
        page.screenshot(path=str(ARTIFACTS / "1b-bad-upload.png"), full_page=True)
        # 2. type dog + grass -> >= 5 photos
        page.get_by_role("tab", name="Find images from words").click()
        page.fill("#search-query textarea, #search-query input", "dog + grass")
        t = time.perf_counter()
        page.click("#search-go")
        wait_for_images(page, "#search-results", 5, 60_000)
        timings["first_search_s"] = round(time.perf_counter() - t, 3)
        page.screenshot(path=str(ARTIFACTS / "2-search.png"), full_page=True)
        # 3. yellow -> both neighbour lists
        page.get_by_role("tab", name="Compare to Word2Vec neighbours").click()
        page.fill("#nb-word textarea, #nb-word input", "yellow")
        t = time.perf_counter()
        page.click("#nb-go")
        text_includes(page, "#nb-table", "red")
        timings["first_neighbours_s"] = round(time.perf_counter() - t, 3)
        page.screenshot(path=str(ARTIFACTS / "3-neighbours.png"), full_page=True)
        # 4. My photos: add, add again, delete
        page.get_by_role("tab", name="My photos").click()
        mine = ARTIFACTS / "my-photo.png"
        Image.fromarray(np.random.default_rng(7).integers(0, 255, (80, 120, 3), dtype=np.uint8)).save(mine)
        for expected in ("Added 1", "already there"):
            page.locator("#my-upload input[type=file]").set_input_files(str(mine))
            page.wait_for_timeout(1000)
            page.click("#my-add")
            text_includes(page, "#my-status", expected)
        n = int(page.locator("#my-count").inner_text().split("Your photos: ")[1].split()[0])
        wait_for_images(page, "#my-grid", n, 30_000)
        page.locator("#my-grid img").last.click()
        page.wait_for_timeout(500)
        page.click("#my-delete")
        text_includes(page, "#my-status", "Deleted 1")
        text_includes(page, "#my-count", f"Your photos: {n - 1}")
        page.screenshot(path=str(ARTIFACTS / "4-my-photos.png"), full_page=True)
        browser.close()
    (ARTIFACTS / "browser_timings.json").write_text(json.dumps(timings, indent=1))
    print("first answers in the browser:", timings)


def test_phone_width(server):
    """At 390 x 844 every tab is visible and the three tasks work."""
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = launch(p)
        page = open_page(browser, server, 390, 844)
        visible = [t.inner_text() for t in page.get_by_role("tab").all() if t.is_visible()]
        assert {"Summarize in 3 words", "Find images from words", "Compare to Word2Vec neighbours",
                "My photos"} <= set(visible), visible
        page.locator("#summ-photo input[type=file]").set_input_files(str(REPO / "demo/gallery/cc-by-sa/kphotoalbum-donna.jpg"))
        page.wait_for_timeout(1000)
        page.click("#summ-go")
        text_includes(page, "#summ-fit", "account for")
        page.screenshot(path=str(ARTIFACTS / "phone-1-summarize.png"), full_page=True)
        page.get_by_role("tab", name="Find images from words").click()
        page.fill("#search-query textarea, #search-query input", "snow")
        page.click("#search-go")
        wait_for_images(page, "#search-results", 3, 60_000)
        page.get_by_role("tab", name="Compare to Word2Vec neighbours").click()
        page.fill("#nb-word textarea, #nb-word input", "beach")
        page.click("#nb-go")
        text_includes(page, "#nb-table", "visual")
        page.screenshot(path=str(ARTIFACTS / "phone-3-neighbours.png"), full_page=True)
        browser.close()


def test_a_gallery_photo_added_to_my_photos_is_found_once(tmp_path):
    from i2v.service import DEFAULT_GALLERY, Service

    s = Service(home=tmp_path, progress=False)
    photos = sorted(str(p) for p in DEFAULT_GALLERY.glob("*/*.jpg"))
    assert s.add_photos(photos[:5])[0] == 5
    for p in photos[:5]:
        hits, _, _ = s.search("", p, 3)
        assert hits[1][1] > 0.3  # the photo itself first (gallery or re-encoded copy), once
    hits, _, _ = s.search("dog", None, 100)
    assert len(hits) == len(s.gallery)  # 49 photos + 5 copies of them = 49 results


def test_a_gallery_photo_deleted_after_indexing_is_left_out(tmp_path, monkeypatch):
    from i2v.pipeline import index_folders
    from i2v.service import Service

    monkeypatch.setenv("I2V_CACHE", str(tmp_path / "cache"))
    g = tmp_path / "g"
    g.mkdir()
    for i in range(3):
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(g / f"{i}.png")
    index_folders([g], tmp_path / "ix", log=lambda m: None)
    (g / "1.png").unlink()
    s = Service(home=tmp_path / "home", gallery=str(tmp_path / "ix"), progress=False)
    hits, _, _ = s.search("dog", None, 3)
    assert len(hits) == 2 and all(p is not None for p, _ in hits)  # no empty entry for the gallery widget
