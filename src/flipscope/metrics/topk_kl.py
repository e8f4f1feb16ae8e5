"""Answer-token KL when a side gives only its k most likely tokens, named by their text (a server): *top-k
approximate*.

Both distributions are reduced to the tokens that both sides name, plus one "rest" bucket holding everything else,
and KL(B‖C) is taken over those buckets:

    KL ≈ Σ_shared p_B (log p_B − log p_C)  +  P_B(rest) (log P_B(rest) − log P_C(rest))

Merging tokens into buckets can only lower a KL divergence, so this is a lower bound of the full-vocabulary value;
how close it comes depends on how much of p_B the shared tokens hold (a server's k = 5…20 usually holds most of it
at answer tokens). Tokens are matched by text, so only texts that name exactly one token of a vocabulary are used
(byte fragments and duplicated texts are left in the rest bucket).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence

import numpy as np

from flipscope.metrics.kl import CompactRows, kl_terms, log1mexp, logsumexp

#: Keeps a rest bucket's log-mass finite where rounding puts the named tokens' mass at or above 1.
_MAX_HEAD_LOGMASS = -1e-12


def unique_pieces(pieces: Sequence[str]) -> dict[str, int]:
    """Token text → id, for the texts that name exactly one token (no empty text, no broken UTF-8)."""
    counts = Counter(pieces)
    return {p: i for i, p in enumerate(pieces) if p and "\ufffd" not in p and counts[p] == 1}


def kl_shared(base: Mapping[str, float], cand: Mapping[str, float]) -> float | None:
    """KL(B‖C) over the tokens both name + one rest bucket (see the module docstring); None where the two lists
    share no token (nothing to compare: the caller counts such positions, it never scores them 0)."""
    shared = [t for t in base if t in cand and np.isfinite(base[t]) and np.isfinite(cand[t])]
    if not shared:
        return None
    lb = np.array([base[t] for t in shared], np.float64)  # [S]
    lc = np.array([cand[t] for t in shared], np.float64)  # [S]
    rest_b = log1mexp(np.minimum(logsumexp(lb), _MAX_HEAD_LOGMASS))
    rest_c = log1mexp(np.minimum(logsumexp(lc), _MAX_HEAD_LOGMASS))
    return float(np.sum(kl_terms(lb, lc)) + kl_terms(rest_b, rest_c))


def compact_pieces(
    rows: CompactRows, pieces: Sequence[str], table: Mapping[str, int] | None = None
) -> list[dict[str, float]]:
    """Each row's top-k head as token text → log-prob, keeping only texts that name one token in ``pieces``
    (``table``: ``unique_pieces(pieces)``, where the caller keeps it)."""
    table = unique_pieces(pieces) if table is None else table
    out = []
    for ids, values in zip(rows.ids, rows.logprobs, strict=True):  # [k], [k] per row
        named = (pieces[int(i)] if i >= 0 else "" for i in ids)  # −1: padding
        out.append({p: float(v) for p, v in zip(named, values, strict=True) if p in table and np.isfinite(v)})
    return out


def full_pieces(
    logprobs: np.ndarray, wanted: Sequence[Mapping[str, float]], table: Mapping[str, int]
) -> list[dict[str, float]]:
    """A full row's log-probs of the tokens named in ``wanted`` (per row), looked up through ``table`` (text → id).
    logprobs: [T, V]; wanted: T mappings."""
    return [
        {t: float(row[table[t]]) for t in names if t in table and table[t] < row.shape[0]}
        for row, names in zip(logprobs, wanted, strict=True)
    ]


def topk_compact(tokens: Sequence[Mapping[str, float]], index: dict[str, int]) -> CompactRows:
    """Server rows (text → log-prob per position) as ``CompactRows`` whose ids index a table of texts, grown in
    ``index`` (text → id) as new texts appear. Rows shorter than the widest are padded with id −1 and −inf."""
    k = max((len(t) for t in tokens), default=0)
    ids = np.full((len(tokens), k), -1, np.int32)
    values = np.full((len(tokens), k), -np.inf, np.float32)
    for row, mapping in enumerate(tokens):
        ordered = sorted(mapping.items(), key=lambda kv: -kv[1])
        for col, (text, value) in enumerate(ordered):
            ids[row, col] = index.setdefault(text, len(index))
            values[row, col] = value
    head = values.astype(np.float64)  # padding is already −inf
    tail = log1mexp(np.minimum(logsumexp(head), _MAX_HEAD_LOGMASS)) if k else np.zeros(len(tokens))
    empty = np.zeros((len(tokens), 0))
    return CompactRows(ids, values, tail.astype(np.float32), empty.astype(np.int32), empty.astype(np.float32))
