"""lm-evaluation-harness 0.4.13 itself against flipscope, on the same items of ARC-Challenge, HellaSwag, Winogrande
and BoolQ with the bundled model: lm-eval runs its own task configs (included from its package) with the data set
pointed at local files holding exactly the items flipscope evaluates. Per item, acc and acc_norm must agree, and
the options' log-likelihoods match to 2e-3 nats, except where the two tokenise the context/continuation boundary
differently (lm-eval encodes context + continuation as one text and splits it; flipscope encodes the continuation
on its own): those are counted, and must be the only differences."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("lm_eval", reason="lm-eval is part of the dev extra")

pytestmark = pytest.mark.e2e

N = 30
TASKS = ("arc_challenge", "hellaswag", "winogrande", "boolq")


def _lm_eval(folder: Path, model: Path, ids: dict[str, list[str]]) -> dict[str, list[dict[str, Any]]]:
    import lm_eval
    from lm_eval.tasks import TaskManager

    from flipscope.tasks.lm_eval_export import export_task

    names = {name: export_task(name, ids[name], folder) for name in TASKS}
    results = lm_eval.simple_evaluate(
        model="hf",
        model_args=f"pretrained={model},dtype=float32",
        tasks=list(names.values()),
        task_manager=TaskManager(include_path=str(folder)),
        num_fewshot=0,
        batch_size=8,
        device="cpu",
        log_samples=True,
    )
    assert results is not None
    return {name: sorted(results["samples"][task], key=lambda s: s["doc_id"]) for name, task in names.items()}


def _their_split(tokenizer: Any, context: str, continuation: str) -> list[int]:
    """The continuation's tokens as lm-eval takes them: the whole text encoded, the context's length cut off."""
    whole = tokenizer.encode(context + continuation, add_special_tokens=False)
    return list(whole[len(tokenizer.encode(context, add_special_tokens=False)) :])


def test_lm_eval_and_flipscope_agree_item_by_item(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from flipscope.models import load_backend, parse_spec
    from flipscope.models.bundled import ensure_local
    from flipscope.tasks import PromptFormat, item_requests, load_task

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "datasets"))
    tasks = {name: load_task(name, limit=N, seed=7) for name in TASKS}
    backend = load_backend(parse_spec("bundled:smollm2-135m"))
    ours: dict[str, list[tuple[tuple[float, ...], tuple[int, ...], list[list[int]]]]] = {}
    for name, task in tasks.items():
        prompts = item_requests(task, PromptFormat.CLOZE, 0)
        scored = backend.score([r for p in prompts for r in p.requests])
        at, rows = 0, []
        for p in prompts:
            mine = scored[at : at + len(p.requests)]
            at += len(p.requests)
            tokens = [backend.tokenizer.encode(c, add_special_tokens=False)  # type: ignore[attr-defined]
                      for r in p.requests for c in r.continuations]  # fmt: skip
            rows.append((tuple(v for s in mine for v in s.logprobs), p.option_chars, tokens))
        ours[name] = rows
    tokenizer = backend.tokenizer  # type: ignore[attr-defined]
    backend.close()
    theirs = _lm_eval(
        tmp_path, ensure_local("smollm2-135m"), {n: [i.item_id for i in t.items] for n, t in tasks.items()}
    )

    boundary, worst = 0, 0.0
    for name, task in tasks.items():
        assert len(theirs[name]) == len(task.items) == N
        for item, (lls, chars, tokens), sample in zip(task.items, ours[name], theirs[name], strict=True):
            their_lls = tuple(float(r[0]) for r in sample["filtered_resps"])
            pairs = [(str(a[0]), str(a[1])) for a in sample["arguments"]]  # (context, continuation) per request
            split_same = all(
                _their_split(tokenizer, ctx, cont) == tok for (ctx, cont), tok in zip(pairs, tokens, strict=True)
            )
            if not split_same:
                boundary += 1
                continue
            gap = max(abs(a - b) for a, b in zip(lls, their_lls, strict=True))
            assert gap < 2e-3, (name, item.item_id, gap)
            worst = max(worst, gap)
            correct = max(range(len(lls)), key=lambda k: (lls[k], -k)) == item.answer
            assert correct == bool(sample["acc"]), (name, item.item_id)
            if "acc_norm" in sample:
                norm = [v / n for v, n in zip(lls, chars, strict=True)]
                assert (max(range(len(norm)), key=lambda k: (norm[k], -k)) == item.answer) == bool(sample["acc_norm"])
    print(
        f"boundary tokenised differently: {boundary} of {N * len(TASKS)} items; largest log-likelihood gap {worst:.2e}"
    )
    assert boundary <= N * len(TASKS) // 10  # a documented exception, not the rule
