#!/usr/bin/env bash
# Installs dreamdist and everything it needs into one Python environment.
#
# Which environment: the active virtualenv/conda env if there is one (so a user's own CUDA torch is
# kept), else ./.venv (created here). Which torch: an importable torch is never touched; otherwise a
# machine with an NVIDIA driver gets the default (CUDA) build and a CPU-only machine gets
# torch==2.13.0 (a CPU build where the local package index provides one). Override with
# DREAMDIST_TORCH_SPEC="torch==X" and/or DREAMDIST_TORCH_INDEX_URL=... .
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ -n "${VIRTUAL_ENV:-}" ]]; then
  PY="$VIRTUAL_ENV/bin/python"
elif [[ -n "${CONDA_PREFIX:-}" ]]; then
  PY="$CONDA_PREFIX/bin/python"
else
  [[ -x .venv/bin/python ]] || python3 -m venv .venv
  PY=.venv/bin/python
fi
PIP=("$PY" -m pip install --disable-pip-version-check -q)

if "$PY" -c "import torch" 2>/dev/null; then
  echo "setup: keeping installed torch $("$PY" -c 'import torch; print(torch.__version__)')"
else
  if [[ -n "${DREAMDIST_TORCH_SPEC:-}" ]]; then
    spec="$DREAMDIST_TORCH_SPEC"
  elif command -v nvidia-smi >/dev/null 2>&1; then
    spec="torch"
  else
    spec="torch==2.13.0"
  fi
  echo "setup: installing $spec"
  if [[ -n "${DREAMDIST_TORCH_INDEX_URL:-}" ]]; then
    "${PIP[@]}" "$spec" --index-url "$DREAMDIST_TORCH_INDEX_URL"
  else
    "${PIP[@]}" "$spec"
  fi
fi

"${PIP[@]}" -e ".[test]"  # requirements.txt (via pyproject) + pytest and ray for the tests
# Optional: the Khronos glTF validator for the mesh-export test (skipped with a reason without npm).
if command -v npm >/dev/null 2>&1; then
  [[ -d node_modules/gltf-validator ]] || npm install --no-save --no-package-lock --no-audit --no-fund --prefix . gltf-validator >/dev/null 2>&1 \
    || echo "setup: could not install gltf-validator; its test will skip"
else
  echo "setup: npm not found, glTF validator test will skip"
fi
# Optional: Debian's chromium for the browser tests (tests/browser.py; skipped with a reason without it).
if command -v chromium >/dev/null 2>&1; then
  :
elif command -v apt-get >/dev/null 2>&1 && [[ "$(id -u)" == 0 ]]; then
  echo "setup: installing Debian's chromium for the browser tests (about 110 MB download)"
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
    || echo "setup: could not install chromium; the browser tests will skip"
else
  echo "setup: chromium not found (Debian, as root: apt-get install chromium); the browser tests will skip"
fi
echo "setup: done ($("$PY" -c 'import dreamdist, torch; print("dreamdist", dreamdist.__version__, "torch", torch.__version__)'))"
