"""Top-k approximate token KL (tokens matched by text) against scipy, and its place below the exact value."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import log_softmax
from scipy.stats import entropy

from flipscope.metrics.kl import compress, kl_exact
from flipscope.metrics.topk_kl import compact_pieces, full_pieces, kl_shared, topk_compact, unique_pieces


def rows(seed: int, t: int = 6, v: int = 40, scale: float = 2.5) -> np.ndarray:
    return log_softmax(np.random.default_rng(seed).normal(size=(t, v)) * scale, axis=-1).astype(np.float32)


def as_text(row: np.ndarray, ids: np.ndarray) -> dict[str, float]:
    return {f"t{int(i)}": float(row[int(i)]) for i in ids}


def test_kl_shared_is_the_kl_of_the_coarse_grained_distributions() -> None:
    base, cand = rows(0)[0], rows(1)[0]
    shared = [3, 7, 11]
    b = as_text(base, np.array([3, 7, 11, 20]))  # t20 is named by the baseline only: it belongs to "rest"
    c = as_text(cand, np.array([7, 3, 11, 25]))
    pb, pc = np.exp(base.astype(np.float64)), np.exp(cand.astype(np.float64))
    coarse_b = np.append(pb[shared], 1 - pb[shared].sum())
    coarse_c = np.append(pc[shared], 1 - pc[shared].sum())
    assert kl_shared(b, c) == pytest.approx(entropy(coarse_b, coarse_c), rel=1e-5)


def test_topk_kl_is_a_lower_bound_and_exact_at_the_full_vocabulary() -> None:
    base, cand = rows(2), rows(3)
    exact = kl_exact(base, cand)[0]  # [T]
    for k in (1, 5, 20):
        top_b, top_c = np.argsort(-base, -1)[:, :k], np.argsort(-cand, -1)[:, :k]
        approx = [
            kl_shared(as_text(b, ib), as_text(c, ic)) for b, c, ib, ic in zip(base, cand, top_b, top_c, strict=True)
        ]
        assert all(a is None or a <= e + 1e-6 for a, e in zip(approx, exact, strict=True))
        if k == 1:  # different top tokens share nothing: no number, never a silent 0
            disjoint = top_b[:, 0] != top_c[:, 0]
            assert disjoint.any() and [a is None for a in approx] == disjoint.tolist()
    everything = np.arange(base.shape[1])
    full = [kl_shared(as_text(b, everything), as_text(c, everything)) for b, c in zip(base, cand, strict=True)]
    np.testing.assert_allclose(full, exact, rtol=1e-4, atol=1e-6)


def test_a_stored_baseline_against_a_full_candidate_by_text() -> None:
    """Baseline compact rows (ids) → text; the candidate's full rows looked up by text through its own table."""
    base, cand = rows(4), rows(5)
    pieces = [f"t{i}" for i in range(base.shape[1])]
    named = compact_pieces(compress(base, 8), pieces)
    looked_up = full_pieces(cand, named, unique_pieces(pieces))
    top = np.argsort(-base, -1)[:, :8]
    for row, ids, want in zip(cand, top, looked_up, strict=True):
        assert want == pytest.approx(as_text(row, ids))


def test_texts_that_name_several_tokens_or_broken_bytes_are_left_out() -> None:
    assert unique_pieces(["a", " b", "a", "", "c\ufffd", "d"]) == {" b": 1, "d": 5}
    base = compress(np.log(np.array([[0.5, 0.3, 0.1, 0.1]], np.float32)), 4)
    assert compact_pieces(base, ["x", "y", "x", "z"]) == [
        {"y": pytest.approx(np.log(0.3)), "z": pytest.approx(np.log(0.1))}
    ]


def test_server_rows_as_compact_rows_share_one_text_table() -> None:
    index: dict[str, int] = {}
    first = topk_compact([{" a": -0.1, " b": -2.5}, {" c": -0.7}], index)
    second = topk_compact([{" b": -0.2, " d": -3.0, " a": -4.0}], index)
    assert index == {" a": 0, " b": 1, " c": 2, " d": 3}
    assert first.ids.tolist() == [[0, 1], [2, -1]] and second.ids.tolist() == [[1, 3, 0]]  # by descending log-prob
    assert first.logprobs[1, 1] == -np.inf
    mass = np.exp(-0.1) + np.exp(-2.5)
    assert float(first.rest[0]) == pytest.approx(np.log(1 - mass), rel=1e-5)
    table = list(index)
    assert compact_pieces(first, table)[1] == {" c": pytest.approx(-0.7)}
