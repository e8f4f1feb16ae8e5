"""Bias of the compact store's KL(B‖C) estimate, before and after the estimator was made one (metrics/kl.py).

The rows and levels of tests/test_kl.py's acceptance test (50k vocabulary, Zipf-like baseline rows with 5–60% of the
mass outside the top 64, candidates at true mean KL ≈ 1e-5 … 1), top-64 + 64 tail samples, SEEDS seeds of the
samples. "before" re-states the two estimators flipscope had until this change, for the record:
- kld (``corpus_kl.kl_both_ways_topk``): head + rest + P_B·mean(−log r), the total clamped at 0 per position;
- compare (``token_kl.kl_compact``): (head + rest) clamped at 0, plus P_B·mean(−log r), unclamped.

    python benchmarks/kl_estimator_bias.py [--seeds 200]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from flipscope.metrics.kl import CompactRows, compress, gather, kl_compact, kl_exact
from test_kl import LEVELS, perturbed, zipf_rows


def before(stored: CompactRows, cand: np.ndarray, *, clamp_total: bool) -> np.ndarray:
    lb, lc = stored.logprobs.astype(np.float64), gather(cand, stored.ids).astype(np.float64)  # [T, k]
    rest_b = stored.rest.astype(np.float64)
    rest_c = np.log1p(-np.minimum(np.exp(lc).sum(-1), 1 - 1e-12))
    coarse = (np.exp(lb) * (lb - lc)).sum(-1) + np.exp(rest_b) * (rest_b - rest_c)
    sb = stored.sample_logprobs.astype(np.float64) - rest_b[:, None]
    sc = gather(cand, stored.sample_ids).astype(np.float64) - rest_c[:, None]
    within = np.exp(rest_b) * (sb - sc).mean(-1)
    return np.maximum(coarse + within, 0) if clamp_total else np.maximum(coarse, 0) + within


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=200)
    args = parser.parse_args()
    rng = np.random.default_rng(7)
    base = zipf_rows(rng)
    cands = {level: perturbed(rng, base, sigma) for level, sigma in LEVELS.items()}
    stored = [compress(base, 64, samples=64, seed=s) for s in range(args.seeds)]
    print(f"{'true KL':>9} {'exact mean':>11} | {'before: kld':>12} {'bias':>8} | {'before: compare':>15} {'bias':>8} |"
          f" {'after':>11} {'bias':>8} {'corr':>6}")  # fmt: skip
    for level, cand in cands.items():
        exact = kl_exact(base, cand)[0]  # [T]
        m = float(exact.mean())
        old_kld = np.mean([before(s, cand, clamp_total=True).mean() for s in stored])
        old_cmp = np.mean([before(s, cand, clamp_total=False).mean() for s in stored])
        new = np.stack([kl_compact(s, cand).forward for s in stored])  # [S, T]
        corr = np.mean([np.corrcoef(row, exact)[0, 1] for row in new])
        print(
            f"{level:>9.0e} {m:>11.4e} | {old_kld:>12.4e} {old_kld / m - 1:>+8.1%} | {old_cmp:>15.4e} "
            f"{old_cmp / m - 1:>+8.1%} | {new.mean():>11.4e} {new.mean() / m - 1:>+8.2%} {corr:>6.3f}"
        )


if __name__ == "__main__":
    main()
