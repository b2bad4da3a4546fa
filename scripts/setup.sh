#!/usr/bin/env bash
# Set up featuregeo on a fresh machine: system packages, a virtualenv, Python packages.
# Idempotent: re-running skips what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${FEATUREGEO_VENV:-.venv}
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3

# Debian packages: text for the built-in corpus (issue 3) and a browser for atlas tests.
APT_PKGS="bible-kjv fortunes dict-gcide python3.11-doc chromium chromium-driver"
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  missing=""
  for p in $APT_PKGS; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
  if [ -n "$missing" ]; then
    echo "[setup] apt-get install$missing"
    apt-get update -qq >/dev/null || true
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null || \
      echo "[setup] warning: could not install some Debian packages:$missing" >&2
  fi
fi

if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating $VENV"
  "$PY" -m venv "$VENV"
fi
. "$VENV/bin/activate"
stamp="$VENV/.featuregeo-setup-$(cat pyproject.toml scripts/setup.sh | sha1sum | cut -c1-12)"
if [ -f "$stamp" ]; then exit 0; fi
# pip, quietly: what it does is printed here; its notices about local index mirrors and wheel-build
# deprecations are not (errors still are, and a failure stops the script).
pip_q() {
  local log rc=0
  log=$(mktemp)
  python -m pip install -q --disable-pip-version-check "$@" >"$log" 2>&1 || rc=$?
  grep -v -E "^WARNING: Location '.*' is ignored|^ *!!|^ *\*{8,}|SetuptoolsDeprecationWarning|WheelFile|^ *$" "$log" || true
  rm -f "$log"
  return "$rc"
}
echo "[setup] pip: torch 2.13.0 (CPU wheel), then featuregeo and its dependencies (a few minutes the first time)"
pip_q --upgrade pip
# torch first, pinned to the CPU wheel present on these machines; everything else keeps it.
pip_q "torch==2.13.0"
pip_q -e ".[dev]"
# Dequantize the default model once and cache it (about 2 minutes the first time; seconds later).
echo "[setup] caching the default model (Gemma 3 270M, dequantized once)"
python -c "from featuregeo.io.models import load_model; m = load_model('default'); print('[setup] default model cached:', m)"
# umap-learn's numba functions compile in every new process unless cached: compile them once here.
echo "[setup] caching the logit effects of the shipped SAEs (the atlas dashboards' logit tables)"
python -c "import time; t = time.perf_counter(); from featuregeo.demo import prepare; n = prepare(); print('[setup] logit effects: %d layers computed in %.0fs' % (n, time.perf_counter() - t))"
echo "[setup] compiling the atlas's UMAP layout once (numba cache in ~/.cache/featuregeo/numba; a minute or two)"
python -c "from featuregeo.atlas.layout import compile_layout; print('[setup] UMAP layout ready in %.0fs' % compile_layout())"
rm -f "$VENV"/.featuregeo-setup-*
touch "$stamp"
echo "[setup] done"
