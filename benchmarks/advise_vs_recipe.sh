#!/usr/bin/env bash
# The README's advise table, fitted on one text and judged on another: the advised plan (sensitivities on 1 window of
# the mixed calibration corpus, mixed:pydoc+stdlib+mmlu), the Q4_K_M-style recipe and uniform rtn:w4g64 on the
# bundled model — corpus KL on 24 windows of 512 tokens of held-out prose (olmo:coqa+drop: CoQA stories and DROP
# passages, a domain the calibration did not include), each minus the recipe paired by window (error bars over
# windows, "lower in k of n windows"), and MMLU flips on 500 test questions (cloze, 0-shot).
# PYDOC=1 adds the row "advised on pydoc": the previous default (sensitivities on 1 window of CPython's documentation
# alone).
# Then the attribution of rtn:w3g64 the README also quotes. Each command's own table is printed as it runs; the README
# table is the last step's output (benchmarks/advise_table.py, from the stored kld and compare runs).
set -euo pipefail
OUT="${1:-runs/advise-vs-recipe}"
mkdir -p "$OUT"
B=bundled:smollm2-135m
HELD_OUT=olmo:coqa+drop
flipscope advise $B --recipe q4_k_m --group 64 --out "$OUT/q4km.json"
/usr/bin/time -f "advise (mixed calibration): %e s, peak %M kB" flipscope advise $B --bits 4,5,6 --group 64,192 \
  --target-bits 4.25 --chunks 1 --device cpu --eval-corpus $HELD_OUT --eval-windows 0:8 --out "$OUT/advised.json"
plans=(+rtn:w4g64 "+plan:$OUT/q4km.json" "+plan:$OUT/advised.json")
rows=("uniform +rtn:w4g64=+rtn:w4g64" "Q4_K_M-style recipe=q4km.json" "advised (mixed calibration)=advised.json")
if [[ "${PYDOC:-0}" == 1 ]]; then  # PYDOC=1: also the old default calibration (another ~20 min on 2 idle cores)
  /usr/bin/time -f "advise (pydoc calibration): %e s, peak %M kB" flipscope advise $B --bits 4,5,6 --group 64,192 \
    --target-bits 4.25 --chunks 1 --device cpu --corpus python:pydoc_data.topics --eval-corpus $HELD_OUT \
    --eval-windows 0:8 --out "$OUT/advised_pydoc.json"
  plans+=("+plan:$OUT/advised_pydoc.json")
  rows+=("advised on pydoc (the old default)=advised_pydoc.json")
fi
flipscope kld $B "${plans[@]}" --corpus $HELD_OUT --chunks 24 --device cpu --out "$OUT/kld-prose"
flipscope compare $B "${plans[@]}" --tasks mmlu --limit 500 --device cpu --out "$OUT/compare"
python benchmarks/advise_table.py "$OUT/kld-prose" --compare "$OUT/compare" --reference q4km.json "${rows[@]}"
[[ "${ATTRIBUTE:-1}" == 1 ]] || exit 0  # ATTRIBUTE=0: the advise table only
/usr/bin/time -f "attribute: %e s, peak %M kB" flipscope attribute $B $B+rtn:w3g64 --by block --chunks 2 \
  --tasks mmlu --limit 200 --top 5 --device cpu --out "$OUT/attr"
