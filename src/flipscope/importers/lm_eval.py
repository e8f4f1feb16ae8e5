"""lm-evaluation-harness sample logs (``--log_samples``) read as flipscope items.

An output folder holds, per task, ``samples_<task>_<timestamp>.jsonl`` (one JSON object per document and filter)
beside ``results_<timestamp>.json`` — directly, or in a subfolder named after the model. Per sample flipscope
reads ``doc_id``, ``doc_hash`` / ``prompt_hash`` (so that runs of different prompts or few-shot settings are not
paired), ``arguments`` (the context and each option), ``filtered_resps`` (multiple choice: one stringified
``[loglik, is_greedy]`` per option; free-form: the filtered answer), ``resps`` (the raw generation) and the
per-item metrics (``acc``, ``acc_norm``, ``exact_match``); from the results file, each task's ``target_delimiter``
and ``exact_match`` settings.

A logged option is ``target_delimiter + choice`` (``" " + choice`` by default); lm-eval's ``acc_norm`` divides each
option's log-likelihood by ``len(choice)``, so that is the length stored, and the per-item ``acc`` and ``acc_norm``
recomputed from the log-likelihoods must equal the logged ones. A free-form answer is stored normalised as
``exact_match`` compares it (``tasks.gsm8k.answer_of``, the rule native gsm8k runs use), "[invalid]" where none."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flipscope.errors import FlipscopeError
from flipscope.metrics import FreeAnswer, ItemScore, Scoring
from flipscope.tasks.gsm8k import GSM8K_RULES, MatchRules, answer_of

SAMPLES = re.compile(r"^samples_(?P<task>.+)_(?P<stamp>\d{4}-\d{2}-\d{2}T[\d\-.:]+)\.jsonl$")
#: lm-eval's GSM8K filters and which of flipscope's two correctness flags each gives.
FLEXIBLE, STRICT = "flexible-extract", "strict-match"
GENERATIVE_METRICS = ("exact_match",)


@dataclass(frozen=True)
class Sample:
    """One document of one task in one lm-eval run (all its filters folded in)."""

    task: str
    doc_id: int
    doc_hash: str
    prompt_hash: str
    prompt: str
    options: list[str]  # multiple choice: each option (lm-eval's choice: the continuation less the delimiter)
    logliks: list[float]  # multiple choice: per option; free-form: empty
    target: int | str  # the right option's index, or the reference answer
    correct: bool  # acc, or exact_match under the flexible (or only) filter
    correct_norm: bool | None  # acc_norm where logged
    text: str = ""  # free-form: the generation
    answer: str = ""  # free-form: the filtered answer, normalised ("[invalid]" where none)
    correct_strict: bool | None = None  # free-form: exact_match under "strict-match"
    #: multiple choice: what lm-eval's acc_norm divides by, len(choice); empty where the choices sit in the
    #: contexts (a multiple-input task such as Winogrande: one continuation, not logged apart)
    option_chars: tuple[int, ...] = ()
    #: a ``loglikelihood`` task (LAMBADA): whether its one continuation is the greedy decoding, lm-eval's acc
    greedy: tuple[bool, ...] | None = None


@dataclass(frozen=True)
class TaskConfig:
    """What reading one task's samples takes from lm-eval's results file."""

    delimiter: str = " "  # the target delimiter between context and choice ("" under a chat template)
    rules: MatchRules | None = None  # exact_match's normalisation; None: not logged
    output_type: str | None = None  # "multiple_choice", "loglikelihood", …; None: no results file


def task_config(results: dict[str, Any] | None, task: str) -> TaskConfig:
    """A task's ``target_delimiter`` and ``exact_match`` settings from its results file (lm-eval's defaults where
    the file is missing: " ", and gsm8k's own settings for a gsm8k task)."""
    config = ((results or {}).get("configs") or {}).get(task)
    if not isinstance(config, dict):
        return TaskConfig(rules=GSM8K_RULES if task.startswith("gsm8k") else None)
    delimiter = str(config.get("target_delimiter", " "))
    prefix = config.get("gen_prefix")
    if (results or {}).get("chat_template") and not (isinstance(prefix, str) and prefix and not prefix[-1].isspace()):
        delimiter = ""  # lm-eval's construct_requests under apply_chat_template
    rules = None
    for metric in config.get("metric_list") or []:
        if isinstance(metric, dict) and metric.get("metric") == "exact_match":
            rules = MatchRules(tuple(str(r) for r in metric.get("regexes_to_ignore") or ()),
                               bool(metric.get("ignore_case")), bool(metric.get("ignore_punctuation")),
                               bool(metric.get("ignore_numbers")))  # fmt: skip
    return TaskConfig(delimiter, rules, str(config.get("output_type") or "") or None)


def task_files(folder: Path) -> dict[str, Path]:
    """Newest ``samples_<task>_<timestamp>.jsonl`` per task under ``folder`` (its model subfolders included)."""
    if not folder.is_dir():
        raise FlipscopeError(f"{folder} is not a folder", fix="give the --output_path of an lm-eval run")
    newest: dict[str, tuple[str, Path]] = {}
    for path in folder.rglob("samples_*.jsonl"):
        match = SAMPLES.match(path.name)
        if match is None:
            continue
        task, stamp = match["task"], match["stamp"]
        if task not in newest or stamp > newest[task][0]:
            newest[task] = (stamp, path)
    if not newest:
        raise FlipscopeError(
            f"{folder} holds no lm-eval sample logs (samples_<task>_<timestamp>.jsonl)",
            fix="run lm-eval with --log_samples --output_path DIR and give DIR",
        )
    return {task: path for task, (_, path) in sorted(newest.items())}


def results_file(samples: Path) -> dict[str, Any] | None:
    """The ``results_<timestamp>.json`` written with a samples file (same folder, same timestamp)."""
    match = SAMPLES.match(samples.name)
    if match is None:
        return None
    path = samples.with_name(f"results_{match['stamp']}.json")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _loglik(value: Any, where: str) -> float:
    """A stringified ``[loglik, is_greedy]`` pair (or the pair itself) → the log-likelihood."""
    pair = value
    if isinstance(value, str):  # some versions write "(-1.25, False)"
        pair = [p.strip() for p in value.strip("()[] ").split(",")]
    if not isinstance(pair, list | tuple) or len(pair) != 2:
        raise ValueError(f"{where}: expected [loglik, is_greedy], got {str(value)[:60]!r}")
    number = float(pair[0])
    if math.isinf(number) and number > 0:
        raise ValueError(f"{where}: a log-likelihood of +inf")
    return number  # NaN kept: the item is reported and left out (ItemScore.finite)


def _is_greedy(value: Any, where: str) -> bool:
    """A stringified ``[loglik, is_greedy]`` pair (or the pair itself) → is_greedy."""
    flag = value[1] if isinstance(value, list | tuple) and len(value) == 2 else str(value).strip("()[] ").split(",")[-1]
    if str(flag).strip() not in ("True", "False", "true", "false", "1", "0"):
        raise ValueError(f"{where}: expected [loglik, is_greedy], got {str(value)[:60]!r}")
    return str(flag).strip() in ("True", "true", "1")


def _options(sample: dict[str, Any], where: str) -> tuple[list[str], list[str]]:
    """(contexts, continuations) from ``arguments`` (``{"gen_args_i": {"arg_0": context, "arg_1": option}}``)."""
    args = sample.get("arguments")
    if isinstance(args, dict):
        rows = [args[k] for k in sorted(args, key=lambda k: int(k.rsplit("_", 1)[-1]))]
        pairs = [(r.get("arg_0"), r.get("arg_1")) for r in rows if isinstance(r, dict)]
    elif isinstance(args, list):  # in-memory form: [[context, continuation], ...]
        pairs = [(r[0], r[1] if len(r) > 1 else None) for r in args if isinstance(r, list | tuple) and r]
    else:
        raise ValueError(f"{where}: no arguments")
    if not pairs or not isinstance(pairs[0][0], str):
        raise ValueError(f"{where}: arguments hold no prompt")
    return [str(p[0]) for p in pairs], [p[1] if isinstance(p[1], str) else "" for p in pairs]


def _choices(continuations: list[str], delimiter: str, where: str) -> list[str]:
    """lm-eval's choices: each logged continuation less the target delimiter it was built with."""
    for continuation in continuations:
        if not continuation.startswith(delimiter):
            raise ValueError(f"{where}: option {continuation[:40]!r} does not start with the task's target "
                             f"delimiter {delimiter!r}")  # fmt: skip
    return [c[len(delimiter) :] for c in continuations]


def _metric(sample: dict[str, Any], name: str) -> bool | None:
    value = sample.get(name)
    if value is None:
        return None
    if isinstance(value, bool | int | float):
        return float(value) > 0
    raise ValueError(f"metric {name} is {value!r}, not a number")


def _target(raw: Any, options: list[str], correct: bool, logliks: list[float], where: str) -> int:
    """The right option's index from the logged ``target`` (an index, or the right option's text)."""
    text = str(raw).strip()
    if text.lstrip("-").isdigit() and 0 <= int(text) < len(options):
        return int(text)
    stripped = [o.strip() for o in options]
    if text in stripped:
        return stripped.index(text)
    if correct and logliks:  # acc = 1: lm-eval's own argmax is the target
        return max(range(len(logliks)), key=lambda i: logliks[i])
    raise ValueError(f"{where}: cannot tell the right option from target {text[:40]!r}")


def _generative(sample: dict[str, Any]) -> bool:
    return any(m in sample for m in GENERATIVE_METRICS) and "acc" not in sample


def read_samples(path: Path, task: str) -> list[Sample]:
    """Every document of one samples file; filters of one document folded into one ``Sample``; the task's
    settings from the results file beside it."""
    config = task_config(results_file(path), task)
    by_doc: dict[int, list[dict[str, Any]]] = {}
    with path.open(encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                doc_id = int(row["doc_id"])
            except (ValueError, KeyError, TypeError) as exc:
                raise FlipscopeError(
                    f"{path}, line {line_no}: not an lm-eval sample ({type(exc).__name__}: {str(exc)[:80]})",
                    fix="give the files lm-eval --log_samples wrote, unchanged",
                ) from exc
            by_doc.setdefault(doc_id, []).append(row)
    out = []
    for doc_id, rows in sorted(by_doc.items()):
        try:
            out.append(_sample(task, doc_id, rows, config))
        except (ValueError, KeyError, TypeError) as exc:
            raise FlipscopeError(
                f"{path}, doc_id {doc_id}: {str(exc)[:160]}",
                fix="an unknown lm-eval sample layout: flipscope reads lm-eval 0.4.x logs",
            ) from exc
    return out


def _sample(task: str, doc_id: int, rows: list[dict[str, Any]], config: TaskConfig) -> Sample:
    first = rows[0]
    where = f"doc_id {doc_id}"
    contexts, continuations = _options(first, where)
    prompt = contexts[0]
    doc_hash, prompt_hash = str(first.get("doc_hash", "")), str(first.get("prompt_hash", ""))
    if _generative(first):
        filters = {str(r.get("filter", "none")): r for r in rows}
        main = filters.get(FLEXIBLE) or next(iter(filters.values()))
        strict = filters.get(STRICT)
        metric = next(m for m in GENERATIVE_METRICS if m in main)
        resps, filtered = main.get("resps"), main.get("filtered_resps")
        text = _first_text(resps)
        return Sample(task, doc_id, doc_hash, prompt_hash, prompt, options=[], logliks=[],
                      target=str(main.get("target", "")),
                      correct=bool(_metric(main, metric)), correct_norm=None, text=text,
                      answer=answer_of(_first_text(filtered), config.rules or MatchRules()),
                      correct_strict=_metric(strict, metric) if strict is not None else None)  # fmt: skip
    if "acc" not in first:
        raise ValueError(f"{where}: neither acc nor exact_match logged (metrics: {first.get('metrics')})")
    # a loglikelihood task's (LAMBADA's) acc is is_greedy of its continuation, logged as is (no delimiter added)
    greedy_task = config.output_type == "loglikelihood"
    options = continuations if greedy_task else _choices(continuations, config.delimiter, where)
    multiple_input = len(set(contexts)) > 1 or greedy_task
    filtered = first.get("filtered_resps")
    if not isinstance(filtered, list) or len(filtered) != len(options):
        raise ValueError(f"{where}: {len(options)} options but filtered_resps is {str(filtered)[:60]}")
    logliks = [_loglik(v, f"{where}, option {i}") for i, v in enumerate(filtered)]
    greedy = tuple(_is_greedy(v, f"{where}, option {i}") for i, v in enumerate(filtered)) if greedy_task else None
    correct = bool(_metric(first, "acc"))
    return Sample(task, doc_id, doc_hash, prompt_hash, prompt, options=options, logliks=logliks,
                  target=_target(first.get("target"), options, correct, logliks, where), correct=correct,
                  correct_norm=None if multiple_input else _metric(first, "acc_norm"),  # no length to divide by
                  option_chars=() if multiple_input else tuple(len(o) for o in options), greedy=greedy)  # fmt: skip


def _first_text(value: Any) -> str:
    """The first string in a (nested) list: lm-eval logs generations as [[text]] or [text]."""
    while isinstance(value, list) and value:
        value = value[0]
    return value if isinstance(value, str) else ""


def item_score(sample: Sample) -> ItemScore:
    """The sample as flipscope's per-item record: log-likelihoods and lm-eval's option lengths (its acc_norm
    divides by ``len(choice)``, as flipscope's ``choice_norm`` does), or the free-form answer."""
    if not sample.options:
        free = FreeAnswer(text=sample.text, answer=sample.answer, correct=sample.correct,
                          correct_strict=sample.correct if sample.correct_strict is None else sample.correct_strict,
                          stop_reason="unknown", new_tokens=None)  # fmt: skip
        return ItemScore(sample.task, str(sample.doc_id), sample.task, 0, (), free=free)
    assert isinstance(sample.target, int)
    return ItemScore(task=sample.task, item_id=str(sample.doc_id), subject=sample.task, target=sample.target,
                     logprobs=tuple(sample.logliks), option_chars=sample.option_chars, greedy=sample.greedy,
                     scoring=Scoring.ARGMAX if sample.greedy is None else Scoring.GREEDY)  # fmt: skip


def check_agreement(samples: Iterable[Sample], scores: Iterable[ItemScore], path: Path) -> None:
    """flipscope's acc and acc_norm recomputed from the log-likelihoods must equal lm-eval's logged ones (they do
    unless the file was edited, or the layout is one flipscope misreads). acc_norm is not checked, nor reported,
    where the options have no lengths (a multiple-input task: the choices sit in the contexts)."""
    fix = "an unknown lm-eval sample layout: flipscope reads lm-eval 0.4.x logs"
    for sample, score in zip(samples, scores, strict=True):
        if not sample.options or not score.finite:
            continue
        if score.correct != sample.correct:
            raise FlipscopeError(
                f"{path}, doc_id {sample.doc_id}: lm-eval logged acc={int(sample.correct)} but its log-likelihoods "
                f"pick option {score.choice} with target {score.target}",
                fix=fix,
            )
        if sample.correct_norm is not None and score.option_chars and score.correct_norm != sample.correct_norm:
            raise FlipscopeError(
                f"{path}, doc_id {sample.doc_id}: lm-eval logged acc_norm={int(sample.correct_norm)} but its "
                f"log-likelihoods over the options' lengths {list(score.option_chars)} pick option "
                f"{score.choice_norm} with target {score.target}",
                fix=fix,
            )
