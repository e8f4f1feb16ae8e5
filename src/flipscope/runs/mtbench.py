"""The public MT-Bench API: ``mtbench`` (answer, measure judge-free, judge) and ``judge`` (re-judge a stored run);
every summary is recomputed from the run directory's files (``store.mtbench_summary``)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from flipscope.display import Display
from flipscope.errors import FlipscopeError
from flipscope.metrics import ItemScore
from flipscope.models import ModelSpec, parse_models, parse_spec
from flipscope.models.base import Generation, StopReason
from flipscope.runs.mtbench_session import (
    ModelAnswers,
    MTBenchSettings,
    Session,
    check_settings,
    load_bench,
    questions_of,
    teacher_scores,
)
from flipscope.store import mtbench_run as store
from flipscope.store.mtbench_summary import summarize_mtbench
from flipscope.store.run_dir import check_out, claim_run_dir, releases_out


@dataclass
class MTBenchResult:
    run: store.MTBenchRunFile
    out: Path


@releases_out
def mtbench(
    baseline: str | ModelSpec,
    candidates: Sequence[str | ModelSpec],
    settings: MTBenchSettings | None = None,
    *,
    out: str | Path | None = None,
    display: Display | None = None,
) -> MTBenchResult:
    """Every model answers MT-Bench's two turns; candidates are measured on the baseline's answers without a judge;
    with ``settings.judge``, the judge grades every answer and compares each candidate with the baseline. A model
    is loaded only where something it does is not stored: a rerun with every answer, teacher-forced pass and
    judgement stored loads none."""
    from flipscope.plumbing.version import library_versions

    settings = settings or MTBenchSettings()
    check_settings(settings)
    check_out(out)
    base_spec, cand_specs = parse_models(baseline, candidates)
    if settings.judge:
        parse_spec(settings.judge)  # a bad judge spec fails before any answer is generated
    bench = load_bench(settings)
    questions = questions_of(bench, settings.limit)
    session = Session(settings, display)
    models: list[ModelAnswers] = []
    scores: dict[str, list[ItemScore]] = {}
    ref = None
    for spec in [base_spec, *cand_specs]:
        role = "baseline" if spec is base_spec else "candidate"
        with session.loader(spec) as backend:
            answers = session.answer(spec, role, questions, backend)
            if role == "baseline":
                ref = session.teacher(spec, role, questions, answers, None, backend)
                teacher = ref
            else:
                teacher = session.teacher(spec, role, questions, models[0], ref, backend) if ref else None
            answers.parameters = backend.parameters  # known without loading it where an earlier run did
        models.append(answers)
        scores[answers.spec] = teacher_scores(questions, answers, teacher)
    folder = claim_run_dir(out, prefix="mtbench-")
    entries = [
        store.MTBenchModel(
            spec=m.spec, role="baseline" if i == 0 else "candidate", fingerprint=m.fingerprint, parameters=m.parameters
        )
        for i, m in enumerate(models)
    ]
    run = store.MTBenchRunFile(
        created=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        versions=library_versions(),
        settings={k: v for k, v in asdict(settings).items() if k not in ("use_cache", "cache_dir")}
        | {"device": session.engine()["device"]},  # the device used (``report`` compares it across runs)
        data_source=bench.source,
        questions=[q.question_id for q in questions],
        baseline=entries[0],
        candidates=entries[1:],
        notes=list(session.notes),
    )
    answers_frame = store.answers_frame([(e.spec, e.role, scores[e.spec]) for e in entries])
    run.summary = summarize_mtbench(run, answers_frame, store.judgements_frame([], []))
    store.write(folder, run, answers_frame, store.judgements_frame([], []))  # answers kept whatever judging does
    if settings.judge:
        run = judge_run(folder, settings.judge, settings, display=display)
    return MTBenchResult(run, folder)


def judge_run(
    folder: str | Path, judge_spec: str, settings: MTBenchSettings | None = None, *, display: Display | None = None
) -> store.MTBenchRunFile:
    """Judge a stored MT-Bench run's answers with ``judge_spec``; earlier judges' judgements are kept beside."""
    import pandas as pd

    folder = Path(folder)
    run, answers, judgements = store.read(folder)
    base = settings or MTBenchSettings()
    settings = MTBenchSettings(
        **{
            **asdict(base),
            "judge": judge_spec,
            "data": base.data or run.settings.get("data"),
            "seed": run.settings.get("seed", base.seed),
        }
    )
    check_settings(settings)
    bench = load_bench(settings)
    by_id = {q.question_id: q for q in bench.questions}
    missing = [i for i in run.questions if i not in by_id]
    if missing:
        raise FlipscopeError(
            f"{folder}: questions {missing[:5]} are not in {bench.source}",
            fix="judge with the MT-Bench data the run was made with (--data)",
        )
    questions = [by_id[i] for i in run.questions]
    models = [_stored_answers(answers, m, questions) for m in [run.baseline, *run.candidates]]
    session = Session(settings, display)
    grades, pairs = session.judge(judge_spec, bench, questions, models)
    label = parse_spec(judge_spec).label()
    kept = judgements[judgements["judge"] != label]
    frame = (
        pd.concat([kept, store.judgements_frame(grades, pairs)], ignore_index=True)
        if len(kept)
        else store.judgements_frame(grades, pairs)
    )
    run.judges = [j for j in run.judges if j != label] + [label]
    run.notes += [n for n in session.notes if n not in run.notes]
    run.summary = summarize_mtbench(run, answers, frame)
    store.write(folder, run, None, frame)
    return run


def _stored_answers(answers: Any, model: store.MTBenchModel, questions: list[Any]) -> ModelAnswers:
    mine = answers[answers["model"] == model.spec]
    text = {(int(r.question_id), int(r.turn)): r for r in mine.itertuples(index=False)}
    turns = []
    for q in questions:
        pair = []
        for t in (1, 2):
            r = text.get((q.question_id, t))
            if r is None:
                raise FlipscopeError(
                    f"answers.parquet has no turn {t} of question {q.question_id} for {model.spec}",
                    fix="run `flipscope mtbench` again into a new folder",
                )
            pair.append(Generation(str(r.text), StopReason(r.stop_reason), None, None))
        turns.append((pair[0], pair[1]))
    return ModelAnswers(model.spec, model.fingerprint, turns, parameters=model.parameters)
