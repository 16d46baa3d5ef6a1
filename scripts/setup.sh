#!/usr/bin/env bash
# One-shot, idempotent set-up: apt data packages, the venv, pinned torch, editable install.
# Re-running is fast: each step is skipped when its stamp (keyed on what it depends on) exists.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PY=${PYTHON:-python3}

need_apt=()
[ -f /usr/share/wordnet/data.noun ] || need_apt+=(wordnet-base)
[ -f /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz ] || need_apt+=(dataset-fashion-mnist)
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)  # renders the HTML reports in the tests
if [ ${#need_apt[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  echo "[setup] apt-get install ${need_apt[*]}"
  $SUDO apt-get update -qq || true
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

[ -x "$VENV/bin/python" ] || { echo "[setup] creating $VENV"; "$PY" -m venv "$VENV"; }
key=$(cat setup.cfg pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)
stamp="$VENV/.installed-$key"
if [ ! -f "$stamp" ]; then
  echo "[setup] installing dependencies (torch takes a few minutes the first time)"
  "$VENV/bin/pip" install -q --upgrade pip
  # These exact pins come from the machine's local wheel store; other versions pull GBs of CUDA wheels.
  "$VENV/bin/pip" install -q torch==2.14.1 torchvision==0.29.1
  "$VENV/bin/pip" install -q -e ".[test]"
  rm -f "$VENV"/.installed-*
  touch "$stamp"
fi
echo "[setup] ready: $VENV"
