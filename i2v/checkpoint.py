"""Checkpoints: a folder with `arrays.npz` (numpy, no pickle) and `config.json`."""
import hashlib
import io
import json
import os
from pathlib import Path

import numpy as np

from .models import Image2Vec, vocab_from_config

CHECKPOINTS_DIR = Path(__file__).resolve().parent.parent / "checkpoints"
DEFAULT_MODEL = "learn-all"  # the best model on the dev split (see checkpoints/eval_flickr8k_test.json)


def save(model, out_dir):
    """Write `model` to `out_dir` atomically (temp files, then rename)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config = dict(model.config, kind=model.kind, vocab=model.vocab.to_json())
    tmp_npz, tmp_json = out / ".arrays.tmp.npz", out / ".config.tmp.json"
    np.savez_compressed(tmp_npz, **model.arrays)
    tmp_json.write_text(json.dumps(config, indent=1) + "\n")  # both written before either is renamed
    os.replace(tmp_npz, out / "arrays.npz")
    os.replace(tmp_json, out / "config.json")
    return out


def record_metrics(name_or_path, key, metrics):
    """Store `metrics` under config["metrics"][key] of a checkpoint (atomic rewrite)."""
    folder = resolve(name_or_path)
    config = json.loads((folder / "config.json").read_text())
    config.setdefault("metrics", {})[key] = metrics
    tmp = folder / ".config.tmp.json"
    tmp.write_text(json.dumps(config, indent=1) + "\n")
    os.replace(tmp, folder / "config.json")


def resolve(name_or_path=None):
    """A checkpoint folder from a model name ('learn-all') or a path; None = the default."""
    name_or_path = name_or_path or os.environ.get("I2V_MODEL") or DEFAULT_MODEL
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
        except (OSError, ValueError) as e:
            raise ValueError(f"broken checkpoint {path}: {e}") from None
        kind = config.pop("kind", None)
        vocab = vocab_from_config(config)
        config.pop("vocab")
        model = Image2Vec(kind, vocab, arrays, config)
        # indexes remember this, so codes of an older version of the model are re-encoded
        model.fingerprint = hashlib.sha1(raw).hexdigest()[:16]
        _LOADED[path] = model
    return _LOADED[path]
