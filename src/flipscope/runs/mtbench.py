"""The public MT-Bench API: ``mtbench`` (answer, measure judge-free, judge) and ``judge`` (re-judge a stored run);
every summary is recomputed from the run directory's files (``store.mtbench_summary``)."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from flipscope.display import Display
from flipscope.errors import FlipscopeError
from flipscope.metrics import ItemScore
from flipscope.models import Backend, ModelSpec, parse_models, parse_spec
from flipscope.models.base import Generation, StopReason
from flipscope.passes.ray_backend import RayModels, ray_models
from flipscope.passes.ray_cluster import RayPlacement
from flipscope.runs.mtbench_session import (
    ModelAnswers,
    MTBenchSettings,
    Session,
    check_settings,
    load_bench,
    questions_of,
    teacher_scores,
)
from flipscope.store import PassResult
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
    with _models(settings.ray) as on_ray:
        session = Session(settings, display, on_ray.load if on_ray else None)
        answered = _answer_models(session, [base_spec, *cand_specs], questions, on_ray)
    models = [answers for answers, _, _ in answered]
    scores = {answers.spec: item_scores for answers, _, item_scores in answered}
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
        settings={k: v for k, v in asdict(settings).items() if k not in ("use_cache", "cache_dir", "ray")}
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


#: A model's answers, its teacher-forced pass over the baseline's answers (None where not measured) and its scores.
Answered = tuple[ModelAnswers, PassResult | None, list[ItemScore]]


def _answer_models(
    session: Session, specs: list[ModelSpec], questions: list[Any], models: RayModels | None
) -> list[Answered]:
    """Every model answered and measured on the baseline's (``specs[0]``) answers. On Ray (``models``): each model in
    a thread of its own, the candidates started once the baseline's model has loaded (or was not needed), so that a
    cluster without room for every model never holds candidates that wait for a baseline it has no room left to
    place; the first error (in model order) gives every actor back and, once the threads have ended, stops the run."""
    if models is None:
        done: list[Answered] = []
        for spec in specs:
            done.append(_answer_model(session, spec, questions, (lambda: done[0]) if done else None))
        return done
    loaded = threading.Event()
    pool = ThreadPoolExecutor(max_workers=len(specs), thread_name_prefix="mtbench")
    try:
        base = pool.submit(_answer_model, session, specs[0], questions, None, loaded)
        base.add_done_callback(lambda _: loaded.set())
        loaded.wait()
        futures = [base]
        if not (base.done() and base.exception()):
            futures += [pool.submit(_answer_model, session, spec, questions, base.result) for spec in specs[1:]]
        wait(futures, return_when=FIRST_EXCEPTION)
        failed = [error for f in futures if f.done() and (error := f.exception()) is not None]
        if failed:
            raise failed[0]
        return [future.result() for future in futures]
    except BaseException:
        models.stop()  # the threads' calls fail at once, and none loads another model
        raise
    finally:
        pool.shutdown(cancel_futures=True)


def _answer_model(
    session: Session,
    spec: ModelSpec,
    questions: list[Any],
    base: Callable[[], Answered] | None,
    loaded: threading.Event | None = None,
) -> Answered:
    """``spec``'s answers and teacher-forced pass (``base``: the baseline's, once done; None: this is the baseline,
    whose model loading sets ``loaded``)."""
    role = "baseline" if base is None else "candidate"
    with session.loader(spec) as lazy:

        def backend() -> Backend:
            made = lazy()
            if loaded is not None:
                loaded.set()
            return made

        answers = session.answer(spec, role, questions, backend)
        if base is None:
            teacher = session.teacher(spec, role, questions, answers, None, backend)
        else:
            base_answers, ref, _ = base()
            teacher = session.teacher(spec, role, questions, base_answers, ref, backend) if ref else None
        answers.parameters = lazy.parameters  # known without loading it where an earlier run did
    return answers, teacher, teacher_scores(questions, answers, teacher)


@contextlib.contextmanager
def _models(placement: RayPlacement | None) -> Iterator[RayModels | None]:
    """Where models load: here (None), or in Ray actors."""
    if placement is None:
        yield None
        return
    with ray_models(placement) as models:
        yield models


def judge_run(
    folder: str | Path, judge_spec: str, settings: MTBenchSettings | None = None, *, display: Display | None = None
) -> store.MTBenchRunFile:
    """Judge a stored MT-Bench run's answers with ``judge_spec``; earlier judges' judgements are kept beside."""
    import pandas as pd

    folder = Path(folder)
    run, answers, judgements = store.read(folder)
    base = settings or MTBenchSettings()
    settings = dataclasses.replace(
        base, judge=judge_spec, data=base.data or run.settings.get("data"), seed=run.settings.get("seed", base.seed)
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
    with _models(settings.ray) as on_ray:
        session = Session(settings, display, on_ray.load if on_ray else None)
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
