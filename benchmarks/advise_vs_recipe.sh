#!/usr/bin/env bash
# The README's attribute/advise table: uniform rtn:w4g64, the Q4_K_M-style recipe and advised plans on the bundled
# model — corpus KL on 16 windows and MMLU flips on the same 500 questions — and the attribution of rtn:w3g64.
# Exactly the commands behind the table (about 75 minutes on 2 CPU cores, run alone); the numbers are read from
# the kld and compare tables they print (`flipscope report OUT/compare --json` for the MMLU columns).
set -euo pipefail
OUT="${1:-runs/advise-vs-recipe}"
mkdir -p "$OUT"
B=bundled:smollm2-135m
flipscope advise $B --recipe q4_k_m --group 64 --out "$OUT/q4km.json"
for spec in "3,4,5,8 1 advised" "3,4,5,6,8 1 advised6" "3,4,5,6 2 advised2w"; do
  read -r bits chunks name <<<"$spec"
  /usr/bin/time -f "advise $name: %e s, peak %M kB" flipscope advise $B --bits "$bits" --group 64 --by linear \
    --target-bits 4.25 --chunks "$chunks" --device cpu --out "$OUT/$name.json"
done
plans=(+rtn:w4g64 "+plan:$OUT/q4km.json" "+plan:$OUT/advised.json" "+plan:$OUT/advised6.json" "+plan:$OUT/advised2w.json")
flipscope kld $B "${plans[@]}" --chunks 16 --out "$OUT/kld"
flipscope compare $B "${plans[@]}" --tasks mmlu --limit 500 --out "$OUT/compare"
/usr/bin/time -f "attribute: %e s, peak %M kB" flipscope attribute $B $B+rtn:w3g64 --by block --chunks 2 \
  --tasks mmlu --limit 200 --top 5 --device cpu --out "$OUT/attr"
