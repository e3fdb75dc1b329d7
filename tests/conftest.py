import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED_FLICKR = REPO.parent / "shared" / "data" / "flickr8k"


def sample_photos():
    """Two real photos shipped by scikit-learn (china.jpg, flower.jpg; CC-BY)."""
    import sklearn

    d = Path(sklearn.__file__).parent / "datasets" / "images"
    return [d / "china.jpg", d / "flower.jpg"]


@pytest.fixture(scope="session")
def photos():
    return sample_photos()


@pytest.fixture
def cache_dir(tmp_path):
    return tmp_path / "cache"


def need_flickr():
    if not (SHARED_FLICKR / "Flickr8k.token.txt").is_file():
        pytest.skip(f"Flickr8k not found at {SHARED_FLICKR} (CI has it; a fresh clone may not)")
    return SHARED_FLICKR


@pytest.fixture
def tiny_images(tmp_path):
    """Six small synthetic JPEGs (solid colours with a stripe) in tmp_path/img."""
    from PIL import Image

    d = tmp_path / "img"
    d.mkdir()
    rng = np.random.default_rng(0)
    names = []
    for i in range(6):
        a = np.full((40, 60, 3), rng.integers(0, 255, 3), np.uint8)
        a[10:20] = rng.integers(0, 255, 3)
        name = f"im{i}.jpg"
        Image.fromarray(a).save(d / name)
        names.append(name)
    return d, names


os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


class ServerUrl(str):
    """The app's URL; `.home` is its data folder (uploads, user index)."""

    def __new__(cls, url, home):
        obj = super().__new__(cls, url)
        obj.home = Path(home)
        return obj


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    port = free_port()
    home = tmp_path_factory.mktemp("srv")
    env = dict(os.environ, I2V_HOME=str(home), GRADIO_ANALYTICS_ENABLED="False")
    proc = subprocess.Popen([sys.executable, "app.py", "--port", str(port)], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}/"
    t0 = time.time()
    while time.time() - t0 < 120:
        if proc.poll() is not None:
            pytest.fail("app exited: " + proc.stdout.read()[-2000:])
        try:
            urllib.request.urlopen(url, timeout=2)
            break
        except OSError:
            time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail("app did not start in 120 s")
    yield ServerUrl(url, home)
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


