#!/usr/bin/env bash
# Same numbers before and after a change that should not change them (a restructuring): the README's default
# comparison plus GSM8K (a free-form task) and a small `kld` run, once with the source tree at REV (default HEAD~1)
# and once with the working tree, every pass recomputed, then the stored records compared value by value
# (benchmarks/same_results.py). Finally the working tree runs the comparison again on REV's pass cache: every pass
# must be found there (cache keys unchanged), and the records must again be the same.
# Usage: benchmarks/same_results.sh [REV] [OUT]
set -euo pipefail
REV="${1:-HEAD~1}"
OUT="$(realpath -m "${2:-runs/same-results}")"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
OLD="$OUT/tree-old"
git -C "$ROOT" worktree prune
rm -rf "$OUT" && mkdir -p "$OUT"
git -C "$ROOT" worktree add --detach "$OLD" "$REV" >/dev/null
trap 'git -C "$ROOT" worktree remove --force "$OLD"' EXIT
MODELS=(bundled:smollm2-135m +rtn:w8 +rtn:w4g64 +rtn:w3g64)
GSM=(--tasks gsm8k --limit 8)
for side in old new; do
  src="$ROOT/src"; [[ $side == old ]] && src="$OLD/src"
  PYTHONPATH="$src" python -c "import flipscope; print('$side:', flipscope.__file__)"
  # old: a fresh pass cache of its own; new: nothing read from any cache
  cache=(--cache-dir "$OUT/passes-old"); [[ $side == new ]] && cache=(--no-cache --cache-dir "$OUT/passes-new")
  PYTHONPATH="$src" flipscope compare "${MODELS[@]}" --tasks mmlu --limit 200 "${cache[@]}" --out "$OUT/compare-$side"
  PYTHONPATH="$src" flipscope compare "${MODELS[@]}" "${GSM[@]}" "${cache[@]}" --out "$OUT/gsm8k-$side"
  PYTHONPATH="$src" flipscope kld bundled:smollm2-135m +rtn:w4g64 --chunks 4 --no-cache --out "$OUT/kld-$side"
done
for run in compare gsm8k kld; do
  python "$ROOT/benchmarks/same_results.py" "$OUT/$run-old" "$OUT/$run-new"
done
# the working tree on the old tree's pass cache: everything found, nothing run
for run in compare gsm8k; do
  tasks=(--tasks mmlu --limit 200); [[ $run == gsm8k ]] && tasks=("${GSM[@]}")
  PYTHONPATH="$ROOT/src" flipscope compare "${MODELS[@]}" "${tasks[@]}" --cache-dir "$OUT/passes-old" \
    --out "$OUT/$run-cached"
  python "$ROOT/benchmarks/same_results.py" "$OUT/$run-old" "$OUT/$run-cached"
  python - "$OUT/$run-cached/run.json" <<'PY'
import json, sys
run = json.load(open(sys.argv[1]))
models = [run["baseline"], *run["candidates"]]
reused = {f"{m['spec']} {task}": flag for m in models for task, flag in m.get("reused", {}).items()}
missed = [name for name, flag in reused.items() if not flag]
print(f"{sys.argv[1]}: {len(reused) - len(missed)} of {len(reused)} passes found in the old tree's cache")
sys.exit(1 if missed or not reused else 0)
PY
done
