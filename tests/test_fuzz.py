"""Fuzzing the two doors strangers reach: the query parser and the image loader. Anything they
are given ends in a result or a clean user error (UserError / ImageError), never anything else.

The suite runs a short version; the long run: I2V_FUZZ_EXAMPLES=100000 pytest tests/test_fuzz.py
"""
import io
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

EXAMPLES = int(os.environ.get("I2V_FUZZ_EXAMPLES", "300"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=False)


@pytest.fixture(scope="module")
def model():
    from i2v.pipeline import load_model

    return load_model()


WORDS = ["dog", "grass", "snow", "young", "beach", "[photo]", "dogs", "runnning", "zebra", "", " "]
TOKENS = st.one_of(st.sampled_from(WORDS + ["+", "-", "*", "2*", "0.5 *", "1e60*", "9" * 40, ".", "-+", "**"]),
                   st.text(alphabet=st.characters(), max_size=8))  # any code point, surrogates and NUL included


@FUZZ
@given(parts=st.lists(TOKENS, max_size=12), sep=st.sampled_from([" ", "", " + ", "-"]))
def test_query_vector_gives_a_vector_or_a_user_error(model, parts, sep):
    from i2v.pipeline import UserError, query_vector

    text = sep.join(parts)
    try:
        q, terms, _ = query_vector(model, text)
    except UserError as e:
        assert str(e) and "\n" not in str(e)
        return
    assert q.shape == (model.dim,) and np.isfinite(q).all() and np.any(q) and terms


def _seed_images():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 255, (20, 30, 3), dtype=np.uint8)
    out = []
    for fmt, mode in (("PNG", "RGB"), ("JPEG", "RGB"), ("GIF", "P"), ("PNG", "I;16"), ("WEBP", "RGB"), ("BMP", "L"),
                      ("TIFF", "RGB"), ("PNG", "LA")):
        im = Image.fromarray(a).convert(mode if mode != "I;16" else "I").convert(mode) if mode != "I;16" else \
            Image.fromarray((a[..., 0].astype(np.uint16) * 257), "I;16")
        buf = io.BytesIO()
        im.save(buf, fmt)
        out.append(buf.getvalue())
    return out


SEEDS = _seed_images()


@FUZZ
@given(seed=st.sampled_from(range(len(SEEDS))), flips=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)),
                                                                 max_size=8),
       cut=st.one_of(st.none(), st.integers(0, 4000)), junk=st.binary(max_size=64))
def test_image_loader_gives_pixels_or_an_image_error(seed, flips, cut, junk):
    from i2v.features import ImageError, load_image

    data = bytearray(SEEDS[seed])
    for pos, val in flips:  # corrupt headers and data
        data[pos % len(data)] = val
    data = bytes(data[:cut] if cut is not None else data) + junk
    try:
        a = load_image(io.BytesIO(data))
    except ImageError as e:
        assert str(e)
        return
    assert a.shape == (224, 224, 3) and a.dtype == np.uint8


@FUZZ
@given(data=st.binary(max_size=2048))
def test_image_loader_on_random_bytes(data):
    from i2v.features import ImageError, load_image

    try:
        load_image(io.BytesIO(data))
    except ImageError:
        pass
