"""How closely each way of holding the baseline reproduces the live (exact) token KL, and what it costs on disk.

For the bundled model and several candidates, every scored position of the corpus is computed once per model; from
the same baseline rows the script derives each store (full rows on an int16 grid / in float16, compact top-k with
and without tail samples) through flipscope's own store code, and prints mean KL, relative error vs live, bytes per
position next to llama.cpp's format, and whether the candidates rank the same. A second table measures what `kld`
takes over positions rather than their mean — the KL percentiles, the maximum and the most divergent positions —
from each store's per-position values against the live ones. Run:

    python benchmarks/kld_stores.py --chunks 16
    python benchmarks/kld_stores.py --candidates +rtn:w8,gguf:smollm2-135m   # an 8-bit candidate, the noise floor

A candidate starting with "+" compresses the baseline; any other spec is a model of its own (gguf:smollm2-135m is the
baseline's weights in llama.cpp: the engines' noise floor). The row "compact k=64 +64 samples, clamped (before)"
re-states the estimator kld used before metrics/kl.py (the total clamped at 0 after adding the sampled tail term).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

from flipscope.metrics.kl import CompactRows, compress, kl_compact, kl_exact

sys.path.insert(0, str(Path(__file__).resolve().parent))
from kl_estimator_bias import before

from flipscope.models import LoadOptions, load_backend, parse_spec
from flipscope.store.baseline_rows import StoreHeader, decode_int16, encode_int16, llama_cpp_bytes_per_position
from flipscope.tasks.corpus import load_corpus, make_windows

CANDIDATES = ["+rtn:w8", "+rtn:w4g64", "+rtn:w3g64", "+rtn:w2g64", "+hqq:w4g64", "+noise:0.02"]
KS = (16, 64, 256)
#: Per-position statistics compared with live: kld's percentiles and maximum, and its 10 most divergent positions.
POSITION_STATS = {"p50": 50.0, "p90": 90.0, "p99": 99.0, "p99.9": 99.9, "max": 100.0}
DIVERGENT = 10


def hold(name: str, rows: torch.Tensor, samples: int, generator: torch.Generator) -> torch.Tensor | CompactRows:
    """The baseline slice as the named store gives it back: decoded full rows, or the compact top-k form."""
    if name == "full int16":
        return torch.log_softmax(decode_int16(*encode_int16(rows)), -1)
    if name == "full float16":
        return torch.log_softmax(rows.half().float(), -1)
    k = int(name.split("k=")[1].split()[0])
    return compress(rows, k, samples if "samples" in name else 0, generator=generator)


def kl_from(held: torch.Tensor | CompactRows, cand: torch.Tensor) -> torch.Tensor:
    return kl_exact(held, cand)[0] if isinstance(held, torch.Tensor) else kl_compact(held, cand).forward


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default="bundled:smollm2-135m")
    parser.add_argument("--chunks", type=int, default=16)
    parser.add_argument("--ctx", type=int, default=512)
    parser.add_argument("--tail-samples", type=int, default=64)
    parser.add_argument("--candidates", default=",".join(CANDIDATES), help="comma-separated candidate specs")
    args = parser.parse_args()
    options = LoadOptions(device="cpu")
    base = load_backend(parse_spec(args.baseline), options)
    tok = base.tokenizer  # type: ignore[attr-defined]
    ids = tok.encode(load_corpus().text, add_special_tokens=False)
    windows = make_windows(ids, args.ctx, bos_id=None, max_windows=args.chunks)
    t0 = time.perf_counter()
    base_rows = [lp for w in windows for lp, _ in base.corpus_logprobs([w])]  # type: ignore[attr-defined]
    vocab = base_rows[0].shape[-1]
    base.close()
    variants: dict[str, list[float]] = {}
    per_position: dict[str, list[dict[str, float]]] = {}  # store → per candidate: statistic → relative error
    generator = torch.Generator().manual_seed(0)
    names = ["full int16", "full float16"]
    for k in KS:
        names += [f"compact k={k}", f"compact k={k} +{args.tail_samples} samples"]
    held = {name: [hold(name, b, args.tail_samples, generator) for b in base_rows] for name in names}
    candidates = args.candidates.split(",")
    old = f"compact k=64 +{args.tail_samples} samples, clamped (before)"
    for spec in candidates:
        cand = load_backend(parse_spec(args.baseline + spec if spec.startswith("+") else spec), options)
        rows = [lp for w in windows for lp, _ in cand.corpus_logprobs([w])]  # type: ignore[attr-defined]
        cand.close()
        live = torch.cat([kl_exact(b, c)[0] for b, c in zip(base_rows, rows, strict=True)])
        variants.setdefault("live", []).append(float(live.mean()))
        for name in names:
            values = torch.cat([kl_from(h, c) for h, c in zip(held[name], rows, strict=True)])
            variants.setdefault(name, []).append(float(values.mean()))
            per_position.setdefault(name, []).append(position_errors(values.numpy(), live.numpy()))
        held64 = held[f"compact k=64 +{args.tail_samples} samples"]
        clamped = [before(h.numpy(), c.numpy(), clamp_total=True) for h, c in zip(held64, rows, strict=True)]
        variants.setdefault(old, []).append(float(np.concatenate(clamped).mean()))
    n = sum(r.shape[0] for r in base_rows)
    print(f"{n} positions ({args.chunks} windows of {args.ctx}), vocabulary {vocab}, {time.perf_counter() - t0:.0f} s")
    llama = llama_cpp_bytes_per_position(vocab)
    sizes = {
        "live": 0.0,
        "full int16": StoreHeader("exact", n, vocab, "", "", {}, code="int16").bytes_per_position(),
        "full float16": StoreHeader("exact", n, vocab, "", "", {}, code="float16").bytes_per_position(),
    }
    for k in KS:
        sizes[f"compact k={k}"] = StoreHeader("compact", n, vocab, "", "", {}, topk=k).bytes_per_position()
        sizes[f"compact k={k} +{args.tail_samples} samples"] = StoreHeader(
            "compact", n, vocab, "", "", {}, topk=k, tail_samples=args.tail_samples
        ).bytes_per_position()
    sizes[old] = sizes[f"compact k=64 +{args.tail_samples} samples"]
    live = np.array(variants["live"])
    rank = np.argsort(live)
    width = max(17, *(len(c) + 1 for c in candidates))
    header = (
        f"{'store':<44}"
        + "".join(f"{c:>{width}}" for c in candidates)
        + "  max |rel err|  bytes/pos  vs llama.cpp  ranking"
    )
    print(header)
    for name, values in variants.items():
        v = np.array(values)
        rel = np.abs(v / live - 1).max()
        same = "same" if np.array_equal(np.argsort(v), rank) else "DIFFERENT"
        cells = "".join(f"{x:>{width}.4e}" for x in v)
        print(f"{name:<44}{cells}  {rel:>12.2%}  {sizes[name]:>9.0f}  {sizes[name] / llama:>10.2%}  {same}")
    print(f"llama.cpp --kl-divergence-base: {llama} bytes/position (2·⌈V/2⌉+4 uint16)")
    print(
        f"\nper-position statistics against live, worst over the candidates: |relative error| of each percentile and "
        f"of the maximum, and the fewest of live's {DIVERGENT} most divergent positions in the store's {DIVERGENT}"
    )
    print(f"{'store':<44}" + "".join(f"{s:>9}" for s in POSITION_STATS) + f"{'top-' + str(DIVERGENT):>9}")
    for name, errors in per_position.items():
        worst = [max(e[s] for e in errors) for s in POSITION_STATS]
        overlap = min(int(e["overlap"]) for e in errors)
        print(f"{name:<44}" + "".join(f"{w:>9.2%}" for w in worst) + f"{overlap:>9d}")


def position_errors(values: np.ndarray, live: np.ndarray) -> dict[str, float]:
    """|relative error| of each statistic of ``values`` against the same statistic of ``live`` ([n] per-position
    KLs), and how many of live's most divergent positions are among those of ``values``."""
    out = {}
    for stat, q in POSITION_STATS.items():
        want, got = np.percentile(live, q), np.percentile(values, q)
        out[stat] = abs(got / want - 1) if want > 0 else float("nan")
    top = set(np.argsort(-live)[:DIVERGENT].tolist()) & set(np.argsort(-values)[:DIVERGENT].tolist())
    out["overlap"] = float(len(top))
    return out


if __name__ == "__main__":
    main()
