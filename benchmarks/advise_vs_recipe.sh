#!/usr/bin/env bash
# The README's attribute/advise table: uniform rtn:w4g64, the Q4_K_M-style recipe and advised plans on the bundled
# model — corpus KL on 16 windows and MMLU flips on the same 500 questions — and the attribution of rtn:w3g64.
# Exactly the commands behind the table (about 2 hours on 2 CPU cores, run alone); the numbers are read from the
# kld and compare tables they print (`flipscope report OUT/compare --json` for the MMLU columns).
set -euo pipefail
OUT="${1:-runs/advise-vs-recipe}"
mkdir -p "$OUT"
B=bundled:smollm2-135m
flipscope advise $B --recipe q4_k_m --group 64 --out "$OUT/q4km.json"
# name, --bits, --group, --chunks, extra options
for spec in "advised 3,4,5,8 64 1" "advised6 3,4,5,6,8 64 1" "advised2w 3,4,5,6 64 2" \
            "advised_g 4,5,6 64,192 1" "advised_f9 3,4,5,6 64 2 --scored-fraction 0.9" \
            "advised_s5 3,4,5,6 64 6 --by module --span 5"; do
  read -r name bits group chunks extra <<<"$spec"
  # shellcheck disable=SC2086
  /usr/bin/time -f "advise $name: %e s, peak %M kB" flipscope advise $B --bits "$bits" --group "$group" \
    --target-bits 4.25 --chunks "$chunks" --device cpu --out "$OUT/$name.json" ${extra:-}
done
# in-context refinement of advised6 (the round is measured, then kept or discarded)
flipscope advise $B --bits 3,4,5,6,8 --group 64 --target-bits 4.25 --chunks 1 --device cpu \
  --start "$OUT/advised6.json" --refine 2 --out "$OUT/advised6_refined.json"
plans=(+rtn:w4g64 "+plan:$OUT/q4km.json" "+plan:$OUT/advised6.json" "+plan:$OUT/advised_g.json")
flipscope kld $B "${plans[@]}" "+plan:$OUT/advised.json" "+plan:$OUT/advised2w.json" "+plan:$OUT/advised_f9.json" \
  "+plan:$OUT/advised_s5.json" --chunks 16 --out "$OUT/kld"
flipscope compare $B "${plans[@]}" --tasks mmlu --limit 500 --out "$OUT/compare"
flipscope compare $B "+plan:$OUT/advised.json" "+plan:$OUT/advised2w.json" --tasks mmlu --limit 500 \
  --out "$OUT/compare-more"
/usr/bin/time -f "attribute: %e s, peak %M kB" flipscope attribute $B $B+rtn:w3g64 --by block --chunks 2 \
  --tasks mmlu --limit 200 --top 5 --device cpu --out "$OUT/attr"
# the advised plan against the recipe, paired over the same positions (the README's "−0.024 ± 0.004, 13 of 16")
python - "$OUT/kld/positions.parquet" <<'PY'
import sys

import numpy as np
import pandas as pd

d = pd.read_parquet(sys.argv[1]).sort_values(["window", "position"])
a, q = (d[d.candidate.str.endswith(s)] for s in ("advised_g.json", "q4km.json"))
x = a.kl.to_numpy(np.float64) - q.kl.to_numpy(np.float64)
windows = a.window.to_numpy()
lower = sum(x[windows == w].mean() < 0 for w in np.unique(windows))
print(f"advised_g − q4km corpus KL: {x.mean():+.4f} ± {x.std(ddof=1) / np.sqrt(x.size):.4f}; "
      f"lower in {lower} of {np.unique(windows).size} windows")
PY
