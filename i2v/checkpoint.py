"""Checkpoints: a folder with `arrays.npz` (numpy, no pickle) and `config.json`."""
import hashlib
import io
import json
import os
import zipfile
from pathlib import Path

import numpy as np

from .atomic import atomic_path, write_bytes
from .models import Image2Vec, vocab_from_config

CHECKPOINTS_DIR = Path(__file__).resolve().parent.parent / "checkpoints"
DEFAULT_MODEL = "open-world"  # learn-all + open-world words (README "Open-world words"); learn-all without them


def default_name():
    """The model used when none is named: $I2V_MODEL, else DEFAULT_MODEL (read here only)."""
    return os.environ.get("I2V_MODEL") or DEFAULT_MODEL


def save(model, out_dir):
    """Write `model` to `out_dir` atomically (both files written before either is renamed)."""
    out = Path(out_dir)
    config = dict(model.config, kind=model.kind, vocab=model.vocab.to_json())
    with atomic_path(out / "config.json") as tmp_json, atomic_path(out / "arrays.npz") as tmp_npz:
        np.savez_compressed(tmp_npz, **model.arrays)
        tmp_json.write_text(json.dumps(config, indent=1) + "\n")
    return out


def record_metrics(name_or_path, key, metrics):
    """Store `metrics` under config["metrics"][key] of a checkpoint (atomic rewrite)."""
    folder = resolve(name_or_path)
    config = json.loads((folder / "config.json").read_text())
    config.setdefault("metrics", {})[key] = metrics
    write_bytes(folder / "config.json", json.dumps(config, indent=1) + "\n")


def resolve(name_or_path=None):
    """A checkpoint folder from a model name ('learn-all') or a path; None = the default."""
    name_or_path = name_or_path or default_name()
    p = Path(name_or_path)
    if (p / "config.json").is_file():
        return p
    q = CHECKPOINTS_DIR / str(name_or_path)
    if (q / "config.json").is_file():
        return q
    names = sorted(d.name for d in CHECKPOINTS_DIR.iterdir() if (d / "config.json").is_file()) \
        if CHECKPOINTS_DIR.is_dir() else []
    raise KeyError(f"no model {str(name_or_path)!r}: give a checkpoint folder or one of {', '.join(names) or '(none trained)'}")


def list_checkpoints():
    if not CHECKPOINTS_DIR.is_dir():
        return []
    return sorted(d.name for d in CHECKPOINTS_DIR.iterdir() if (d / "config.json").is_file())


_LOADED = {}


def load(name_or_path=None):
    """Load a checkpoint (cached per folder). Arrays are read with allow_pickle=False."""
    path = resolve(name_or_path).resolve()
    if path not in _LOADED:
        try:
            config = json.loads((path / "config.json").read_text())
            raw = (path / "arrays.npz").read_bytes()
            with np.load(io.BytesIO(raw), allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
            if not isinstance(config, dict):
                raise ValueError(f"config.json: expected an object, got {type(config).__name__}")
            kind = config.pop("kind", None)
            vocab = vocab_from_config(config.pop("vocab", None))
            model = Image2Vec(kind, vocab, arrays, config)
        except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile) as e:
            raise ValueError(f"broken checkpoint {path}: {e}") from None
        # indexes remember this, so codes of an older version of the model are re-encoded
        model.fingerprint = hashlib.sha1(raw).hexdigest()[:16]
        model.name = str(name_or_path or default_name())
        _LOADED[path] = model
    return _LOADED[path]
