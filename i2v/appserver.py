"""Start `app.py` on a free loopback port and wait until it serves (for tests and benchmarks)."""
import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_app(*args, home, env=None, timeout=120, output=False, script="app.py"):
    """Run `python app.py --port P *args` with I2V_HOME=`home`; yield (url, process) once the page answers.

    output=True keeps the app's stdout/stderr readable from the process (text); the app is
    terminated on exit. RuntimeError (with the app's last output) if it exits or does not serve in time.
    """
    port = free_port()
    env = dict(os.environ, **(env or {}), I2V_HOME=str(home), GRADIO_ANALYTICS_ENABLED="False")
    sink = subprocess.PIPE if output else subprocess.DEVNULL
    proc = subprocess.Popen([sys.executable, str(script), "--port", str(port), *map(str, args)], cwd=REPO, env=env,
                            stdout=sink, stderr=subprocess.STDOUT if output else sink, text=True)
    url = f"http://127.0.0.1:{port}/"
    try:
        t0 = time.time()
        while True:
            if proc.poll() is not None:
                tail = proc.stdout.read()[-2000:] if output else ""
                raise RuntimeError(f"app exited with code {proc.returncode}: {tail}")
            try:
                urllib.request.urlopen(url, timeout=2)
                break
            except OSError:
                if time.time() - t0 > timeout:
                    raise RuntimeError(f"app did not serve {url} within {timeout} s") from None
                time.sleep(0.2)
        yield url, proc
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
