import os
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


@pytest.fixture
def tiny_flickr(tmp_path, tiny_images, monkeypatch):
    """A Flickr8k-format folder over the six tiny images (train: all, dev and test: the first 3);
    the feature cache goes to tmp_path/cache."""
    monkeypatch.setenv("I2V_CACHE", str(tmp_path / "cache"))
    d, names = tiny_images
    (d.parent / "images").symlink_to(d)
    colours = ["red", "blue", "green"]
    lines = [f"{n}#{j}\tA {colours[i % 3]} square on a white wall ." for i, n in enumerate(names) for j in range(5)]
    (d.parent / "Flickr8k.token.txt").write_text("\n".join(lines) + "\n")
    (d.parent / "Flickr_8k.trainImages.txt").write_text("\n".join(names) + "\n")
    for split in ("dev", "test"):
        (d.parent / f"Flickr_8k.{split}Images.txt").write_text("\n".join(names[:3]) + "\n")
    return d.parent


os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


class ServerUrl(str):
    """The app's URL; `.home` is its data folder (uploads, user index)."""

    def __new__(cls, url, home):
        obj = super().__new__(cls, url)
        obj.home = Path(home)
        return obj


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    from i2v.appserver import running_app

    home = tmp_path_factory.mktemp("srv")
    try:
        ctx = running_app(home=home, output=True)
        url, _ = ctx.__enter__()
    except RuntimeError as e:
        pytest.fail(str(e))
    yield ServerUrl(url, home)
    ctx.__exit__(None, None, None)
