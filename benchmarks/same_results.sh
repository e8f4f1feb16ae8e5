#!/usr/bin/env bash
# Same numbers before and after a change that should not change them (a restructuring): the README's default
# comparison and a small `kld` run, once with the source tree at REV (default HEAD~1) and once with the working tree,
# every pass recomputed (--no-cache), then the stored records compared value by value (benchmarks/same_results.py).
# Usage: benchmarks/same_results.sh [REV] [OUT]
set -euo pipefail
REV="${1:-HEAD~1}"
OUT="${2:-runs/same-results}"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
OLD="$OUT/tree-old"
rm -rf "$OUT" && mkdir -p "$OUT"
git -C "$ROOT" worktree add --detach "$OLD" "$REV" >/dev/null
trap 'git -C "$ROOT" worktree remove --force "$OLD"' EXIT
for side in old new; do
  src="$ROOT/src"; [[ $side == old ]] && src="$OLD/src"
  PYTHONPATH="$src" python -c "import flipscope, sys; print('$side:', flipscope.__file__)"
  PYTHONPATH="$src" flipscope compare bundled:smollm2-135m +rtn:w8 +rtn:w4g64 +rtn:w3g64 --tasks mmlu --limit 200 \
    --no-cache --out "$OUT/compare-$side"
  PYTHONPATH="$src" flipscope kld bundled:smollm2-135m +rtn:w4g64 --chunks 4 --no-cache --out "$OUT/kld-$side"
done
python "$ROOT/benchmarks/same_results.py" "$OUT/compare-old" "$OUT/compare-new"
python "$ROOT/benchmarks/same_results.py" "$OUT/kld-old" "$OUT/kld-new"
