#!/usr/bin/env bash
# Set up and run the whole test suite: Debian chromium for the browser tests, a virtual
# environment with the pinned requirements, then pytest. Used by .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium chromium-driver >/dev/null
fi
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/pip install -q --disable-pip-version-check -r tests/requirements.txt
exec .venv/bin/python -m pytest -q -p no:cacheprovider tests "$@"
