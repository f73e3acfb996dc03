#!/usr/bin/env bash
# Create the development virtual environment from nothing: pinned CPU torch, the package (editable) with its
# LLaMA-Factory and dev extras, and the CPU-only quirks of LLaMA-Factory's vision/audio dependencies.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3.11}
VENV=${VENV:-.venv}

if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip)
"${PIP[@]}" install --quiet --upgrade pip
# torch first, pinned, so nothing later can pull a CUDA build.
"${PIP[@]}" install --quiet -c constraints.txt "torch==2.13.0"
"${PIP[@]}" install --quiet -c constraints.txt -e ".[llamafactory,dev]"

# LLaMA-Factory requires torchvision/torchaudio; their PyPI wheels are CUDA builds that fail to load next to the CPU
# torch. Remove torchvision and make torchaudio import as pure Python. Development/CI only, never in the package.
"${PIP[@]}" uninstall --quiet -y torchvision >/dev/null 2>&1 || true
site=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
rm -f "$site"/torchaudio/lib/*.so

"$VENV/bin/python" -c 'import torch, losia_factory; print(f"torch {torch.__version__}, losia_factory {losia_factory.__version__}")'
touch "$VENV/.installed"
