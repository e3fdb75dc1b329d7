"""One way to write a file in place: a temp file beside it, fsync, rename, fsync the folder.

A reader sees the old file or the new one, never half of one; a crash (or a full disk) leaves
the old file and no temp file behind.
"""
import contextlib
import os
import secrets
from pathlib import Path


@contextlib.contextmanager
def atomic_path(dest):
    """Yield a temp path in `dest`'s folder; on a clean exit it replaces `dest` durably.

    The temp name keeps `dest`'s suffix (np.savez appends ".npz" to names without it). On an
    exception the temp file is removed and `dest` is left as it was.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.stem}.{os.getpid()}.{secrets.token_hex(4)}.tmp{dest.suffix}")
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, dest)
    except BaseException as e:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(e, OSError) and not e.filename:  # say which file could not be written
            raise OSError(e.errno, e.strerror or str(e), str(dest)) from None
        raise
    _fsync_dir(dest.parent)


def write_bytes(dest, data):
    """Atomically write `data` (bytes or str, UTF-8) to `dest`."""
    with atomic_path(dest) as tmp:
        tmp.write_bytes(data.encode() if isinstance(data, str) else data)
    return Path(dest)


def _fsync_dir(folder):
    with contextlib.suppress(OSError):  # not every file system lets a folder be opened
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
