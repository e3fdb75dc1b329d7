import numpy as np
import pytest
from PIL import Image

from i2v import features
from i2v.features import Backbone, ImageError, extract, get_backbone, load_image


def test_features_of_real_photos_shape_and_determinism(photos, cache_dir):
    f1, l1, ok, err = extract([str(p) for p in photos], cache_dir=cache_dir, progress=False)
    assert f1.shape == (2, 1280) and l1.shape == (2, 1000) and ok == [0, 1] and not err
    assert np.isfinite(f1).all() and f1.std() > 0
    f2, _, _, _ = extract([str(p) for p in photos], cache_dir=None, use_cache=False, progress=False)
    np.testing.assert_allclose(f1, f2, rtol=1e-5, atol=1e-5)
    # china.jpg is a temple, flower.jpg a flower: the ImageNet head tells them apart
    assert l1[0].argmax() != l1[1].argmax()


def test_cache_hit_costs_no_forward(photos, cache_dir, monkeypatch):
    paths = [str(p) for p in photos]
    f1, l1, _, _ = extract(paths, cache_dir=cache_dir, progress=False)
    monkeypatch.setattr(Backbone, "forward", lambda *a: pytest.fail("cache miss"))
    f2, l2, _, _ = extract(paths, cache_dir=cache_dir, progress=False)
    np.testing.assert_array_equal(f1, f2)
    np.testing.assert_array_equal(l1, l2)


def test_changed_file_is_recomputed(tmp_path, photos, cache_dir):
    p = tmp_path / "a.jpg"
    p.write_bytes(photos[0].read_bytes())
    f1, _, _, _ = extract([str(p)], cache_dir=cache_dir, progress=False)
    p.write_bytes(photos[1].read_bytes())
    f2, _, _, _ = extract([str(p)], cache_dir=cache_dir, progress=False)
    assert not np.allclose(f1, f2)


def test_interrupted_run_resumes(tmp_path, photos, cache_dir, monkeypatch):
    paths = []
    for i in range(6):  # six distinct files (copies have their own path key)
        p = tmp_path / f"p{i}.jpg"
        p.write_bytes(photos[i % 2].read_bytes())
        paths.append(str(p))
    real = Backbone.forward
    calls = []

    def flaky(self, batch):
        calls.append(len(batch))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(self, batch)

    monkeypatch.setattr(Backbone, "forward", flaky)
    with pytest.raises(KeyboardInterrupt):
        extract(paths, cache_dir=cache_dir, batch_size=2, shard_size=2, progress=False)
    assert calls == [2, 2]
    calls.clear()
    monkeypatch.setattr(Backbone, "forward", lambda self, b: (calls.append(len(b)), real(self, b))[1])
    f, _, ok, _ = extract(paths, cache_dir=cache_dir, batch_size=2, progress=False)
    assert sum(calls) == 4 and len(ok) == 6  # the first batch was kept, only 4 images redone
    np.testing.assert_allclose(f[0], f[2], atol=1e-5)


def test_exif_rotation_gives_the_upright_photo(tmp_path, photos):
    im = Image.open(photos[0])
    upright = tmp_path / "upright.jpg"
    im.save(upright, quality=95)
    # stored sideways with EXIF orientation 6 ("rotate 90 CW to view"): rotating 90 CCW stores it
    sideways = tmp_path / "sideways.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6
    im.transpose(Image.Transpose.ROTATE_90).save(sideways, quality=95, exif=exif)
    no_tag = tmp_path / "no_tag.jpg"
    im.transpose(Image.Transpose.ROTATE_90).save(no_tag, quality=95)
    net = get_backbone()
    f_up, _ = net.encode_images([upright])
    f_side, _ = net.encode_images([sideways])
    f_raw, _ = net.encode_images([no_tag])
    cos = lambda a, b: float((a[0] @ b[0]) / np.linalg.norm(a) / np.linalg.norm(b))
    assert cos(f_up, f_side) > 0.97
    assert cos(f_up, f_side) > cos(f_up, f_raw) + 0.02


@pytest.mark.parametrize("mode", ["RGBA", "P", "L", "CMYK", "I;16", "LA", "1"])
def test_odd_modes_become_rgb(tmp_path, photos, mode):
    im = Image.open(photos[1]).convert("RGB")
    if mode == "I;16":
        a = np.asarray(im.convert("L"), np.uint16) * 257
        im = Image.new("I;16", im.size)
        im.frombytes(a.astype("<u2").tobytes())
        path = tmp_path / "x.png"
    elif mode == "P":
        im = im.convert("P", palette=Image.Palette.ADAPTIVE)
        im.info["transparency"] = 0
        path = tmp_path / "x.png"
    else:
        im = im.convert(mode)
        path = tmp_path / ("x.jpg" if mode == "CMYK" else "x.png")
    im.save(path)
    a = load_image(path)
    assert a.shape == (224, 224, 3) and a.dtype == np.uint8 and a.std() > 5


def test_large_photo_is_reduced_while_decoding(tmp_path, photos):
    big = tmp_path / "big.jpg"
    Image.open(photos[0]).resize((4000, 3000)).save(big, quality=80)
    im = Image.open(big)
    im.draft("RGB", (224, 224))
    assert im.size[0] <= 1000  # JPEG draft decodes at 1/8 scale here
    assert load_image(big).shape == (224, 224, 3)


def test_unreadable_files_are_reported_not_fatal(tmp_path, photos, cache_dir):
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("hello")
    trunc = tmp_path / "trunc.jpg"
    trunc.write_bytes(photos[0].read_bytes()[:200])
    paths = [str(tmp_path / "empty.jpg"), str(photos[0]), str(tmp_path / "text.jpg"), str(trunc),
             str(tmp_path / "missing.jpg")]
    f, _, ok, errors = extract(paths, cache_dir=cache_dir, progress=False)
    assert ok == [1] and f.shape == (1, 1280) and len(errors) == 4
    assert all(any(n in e for e in errors) for n in ("empty.jpg", "text.jpg", "trunc.jpg", "missing.jpg"))
    with pytest.raises(ImageError, match="text.jpg"):
        load_image(tmp_path / "text.jpg")


def test_unknown_backbone():
    with pytest.raises(KeyError, match="unknown backbone 'vgg'"):
        extract([], backbone="vgg")
    assert features.list_backbones() == ["efficientnet-lite0"]
