"""``mtbench`` and ``judge``: every model answers MT-Bench's two turns once (stored, resumable), candidates are
measured judge-free on the baseline's answers (teacher-forced, as for GSM8K), and a judge grades the answers
(single, 1–10) and compares each candidate with the baseline (pairwise, both orders). Every generation — answers
and the judge's outputs — goes through the resumable generation store, so a killed run continues where it
stopped and judges nothing twice; ``judge`` re-judges a stored run with another judge without generating answers.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from flipscope.display import Display, NullDisplay
from flipscope.errors import FlipscopeError
from flipscope.judge import Grade, PairJudgement, parse_pair, parse_rating, prompts
from flipscope.metrics import ItemScore
from flipscope.metrics.records import NO_ANSWER
from flipscope.models import Backend, LoadOptions, ModelSpec, fingerprint, load_backend, parse_spec
from flipscope.models.base import Decoding, Generation, GenRequest
from flipscope.passes.generation import free_answer
from flipscope.passes.ray_cluster import RayPlacement
from flipscope.passes.teacher import TeacherScorer
from flipscope.plumbing.atomic import write_atomically
from flipscope.plumbing.cache import cache_root, content_hash
from flipscope.store import PassResult, Settings
from flipscope.store.generations import GenerationStore
from flipscope.tasks import ItemRequests, MCItem, ScoreRequest, TaskData
from flipscope.tasks.free import Graded
from flipscope.tasks.mtbench import MAX_NEW_TOKENS, TEMPERATURE, MTBench, Question, load_mtbench

log = logging.getLogger(__name__)

#: Loads a model where it runs (``load_backend``: here).
Loader = Callable[[ModelSpec, LoadOptions], Backend]

#: Bumped whenever answering or judging changes what a stored generation would hold (2: chat prompts are the chat
#: template's own ids — one BOS where the template writes it, none added where it does not).
MTBENCH_VERSION = 2
#: FastChat's judge max_tokens.
JUDGE_MAX_TOKENS = 2048
#: Judges this small grade at chance (warned about).
WEAK_JUDGE_PARAMETERS = 1_000_000_000


@dataclass(frozen=True, kw_only=True)
class MTBenchSettings:
    """Everything that changes an MT-Bench run's numbers; shared by the CLI and the API."""

    judge: str | None = None
    single: bool = True
    pairwise: bool = True
    greedy: bool = False
    seed: int = 0
    limit: int | None = None  # questions per category (all 10 by default)
    max_new_tokens: int = MAX_NEW_TOKENS
    judge_max_tokens: int = JUDGE_MAX_TOKENS
    data: str | None = None  # a folder laid out like FastChat's llm_judge/data; default: the wheel
    device: str = "auto"
    dtype: str = "float32"
    batch_size: int = 16
    topk: int = 128
    tail_samples: int = 64
    use_cache: bool = True
    cache_dir: str | None = None
    ray: RayPlacement | None = None  # models (the judge too) loaded in Ray actors (``passes.ray_backend``)


@dataclass
class ModelAnswers:
    spec: str
    fingerprint: str
    turns: list[tuple[Generation, Generation]]  # per question
    teacher: list[ItemScore] | None = None  # per question and turn: its scores on the baseline's answers
    parameters: int | None = None

    def texts(self) -> list[tuple[str, str]]:
        return [(a.text, b.text) for a, b in self.turns]


def questions_of(bench: MTBench, limit: int | None) -> list[Question]:
    if limit is None:
        return list(bench.questions)
    counts: dict[str, int] = {}
    out = []
    for q in bench.questions:
        if counts.get(q.category, 0) < limit:
            counts[q.category] = counts.get(q.category, 0) + 1
            out.append(q)
    return out


def temperature(settings: MTBenchSettings, question: Question) -> float:
    return 0.0 if settings.greedy else TEMPERATURE.get(question.category, 0.7)


class LazyBackend:
    """A model loaded on its first call (``loaded``: None until then), so that nothing loads when every pass it
    serves is stored. Its parameter count is kept beside the stored passes (``facts``, by weights fingerprint):
    a later run that loads nothing still knows it (run.json, the weak-judge check)."""

    def __init__(self, spec: ModelSpec, options: LoadOptions, facts: Path, load: Loader | None = None) -> None:
        self.spec = spec
        self.options = options
        self.facts = facts
        self.load = load or load_backend
        self.loaded: Backend | None = None

    def __call__(self) -> Backend:
        if self.loaded is None:
            self.loaded = self.load(self.spec, self.options)
            count = self.parameters
            if count is not None:
                self.facts.parent.mkdir(parents=True, exist_ok=True)
                write_atomically(self.facts, lambda tmp: tmp.write_text(json.dumps({"parameters": count})))
        return self.loaded

    @property
    def parameters(self) -> int | None:
        """From the loaded model, else as an earlier run that loaded it recorded (None where never known)."""
        if self.loaded is not None:
            count = self.loaded.info.details.get("parameters")
        else:
            try:
                count = json.loads(self.facts.read_text(encoding="utf-8")).get("parameters")
            except (OSError, ValueError, AttributeError):
                count = None
        return count if isinstance(count, int) else None


class Session:
    """The stores and settings one ``mtbench`` or ``judge`` run uses."""

    def __init__(self, settings: MTBenchSettings, display: Display | None, load: Loader | None = None) -> None:
        self.settings = settings
        self.load = load  # None: in this process
        self.display: Display = display or NullDisplay()
        root = Path(settings.cache_dir) if settings.cache_dir else cache_root() / "passes"
        self.root = root
        self.generations = GenerationStore(root / "generations")
        device = settings.ray.device(settings.device) if settings.ray else settings.device  # auto: the actors'
        self.options = LoadOptions(device, settings.dtype, settings.batch_size)
        self.notes: list[str] = []
        #: generations per stored chunk: enough to keep a batch full (continuous batching refills from it), few
        #: enough that a killed run loses little
        self.chunk = 2 * settings.batch_size

    def engine(self) -> dict[str, Any]:
        return {
            "device": self.options.resolved().device,
            "dtype": self.settings.dtype,
            "batch": self.settings.batch_size,
        }

    def generate(
        self,
        title: str,
        weights: str,
        backend: Callable[[], Backend],
        requests: list[GenRequest],
        decodings: list[Decoding],
    ) -> list[Generation]:
        """One stored, resumable generation pass per distinct decoding (per-category temperatures)."""
        out: list[Generation | None] = [None] * len(requests)
        with self.display.progress(title, len(requests)) as advance:
            for decoding in dict.fromkeys(decodings):
                picked = [i for i, d in enumerate(decodings) if d == decoding]
                key = content_hash(
                    {
                        "v": MTBENCH_VERSION,
                        "kind": "mtbench-generate",
                        "model": weights,
                        "requests": [asdict(requests[i]) for i in picked],
                        "decoding": asdict(decoding),
                        **self.engine(),
                    }
                )

                def run(
                    sub: Sequence[int], picked: list[int] = picked, decoding: Decoding = decoding
                ) -> list[Generation]:
                    return backend().generate([requests[picked[j]] for j in sub], decoding, advance=advance)

                made, _ = self.generations.run(
                    key, len(picked), run, chunk=self.chunk, use_cache=self.settings.use_cache
                )
                for i, g in zip(picked, made, strict=True):
                    out[i] = g
        return [g for g in out if g is not None]

    @contextlib.contextmanager
    def loader(self, spec: ModelSpec) -> Iterator[LazyBackend]:
        """The model, loaded on first need (nothing loads when every pass is stored) and closed at the end."""
        backend = LazyBackend(spec, self.options, self.root / "models" / f"{fingerprint(spec)}.json", self.load)
        try:
            yield backend
        finally:
            if backend.loaded is not None:
                backend.loaded.close()

    def answer(
        self, spec: ModelSpec, role: str, questions: list[Question], backend: Callable[[], Backend]
    ) -> ModelAnswers:
        """Both turns for every question: turn 2 sees the model's own turn-1 answer."""
        weights = fingerprint(spec)
        decodings = [
            Decoding(self.settings.max_new_tokens, (), temperature(self.settings, q), self.settings.seed)
            for q in questions
        ]
        first = self.generate(
            f"{role} {spec.label()} · turn 1",
            weights,
            backend,
            [GenRequest(q.turns[0], chat=True) for q in questions],
            decodings,
        )
        later = [
            GenRequest(q.turns[1], chat=True, history=((q.turns[0], a.text),))
            for q, a in zip(questions, first, strict=True)
        ]
        second = self.generate(f"{role} {spec.label()} · turn 2", weights, backend, later, decodings)
        return ModelAnswers(spec.label(), weights, list(zip(first, second, strict=True)))

    def teacher(
        self,
        spec: ModelSpec,
        role: str,
        questions: list[Question],
        base: ModelAnswers,
        ref: PassResult | None,
        loader: Callable[[], Backend],
    ) -> PassResult | None:
        """This model scoring the baseline's answers (both turns) in the baseline's conversations, teacher-forced;
        None where the backend cannot render its chat template for scoring. Keyed by the conversations (not their
        rendering), so a stored pass is found without loading the model."""
        items, asked = [], []
        for q, (a1, a2) in zip(questions, base.turns, strict=True):
            for turn, answer, history in ((1, a1, ()), (2, a2, ((q.turns[0], a1.text),))):
                if not answer.text.strip():
                    continue
                items.append(MCItem(f"{q.question_id}-{turn}", "", (answer.text,), 0, q.category))
                asked.append(GenRequest(q.turns[turn - 1], chat=True, history=history))
        settings = Settings(
            format="chat",
            fewshot=0,
            limit=self.settings.limit,
            seed=self.settings.seed,
            topk=self.settings.topk,
            tail_samples=self.settings.tail_samples,
            device=self.engine()["device"],
            dtype=self.settings.dtype,
            batch_size=self.settings.batch_size,
        )
        scorer = TeacherScorer(settings, self.display, self.root, use_cache=self.settings.use_cache)
        key = content_hash(
            {
                "v": MTBENCH_VERSION,
                "kind": "mtbench-teacher",
                **scorer.key(fingerprint(spec), [asdict(r) for r in asked] + [i.choices[0] for i in items], ref),
            }
        )
        stored = scorer.stored(key)
        if stored is not None:
            return stored
        backend = loader()
        render = getattr(backend, "chat_prompt", None)
        if render is None or backend.info.capabilities.rows is None:
            self.note(
                f"{spec.label()}: its backend cannot score text after its chat template, so the "
                "judge-free distances are not measured for it"
            )
            return None
        requests = [
            ItemRequests((ScoreRequest("", render(r), (i.choices[0],)),), ()) for r, i in zip(asked, items, strict=True)
        ]
        data = TaskData("mtbench:teacher", items, {}, {})
        result, _ = scorer.score(data, requests, key, spec, loader, ref, f"{role} {spec.label()} · scoring B's answers")
        self.notes += [n for n in scorer.notes if n not in self.notes]
        return result

    def judge(
        self, judge: str, bench: MTBench, questions: list[Question], models: list[ModelAnswers]
    ) -> tuple[list[Grade], list[PairJudgement]]:
        """Single grades for every model, pairwise verdicts for every candidate against the baseline (models[0])."""
        spec = parse_spec(judge)
        weights = fingerprint(spec)
        decoding = Decoding(self.settings.judge_max_tokens, (), 0.0, self.settings.seed)
        grades: list[Grade] = []
        pairs: list[PairJudgement] = []
        slots = [(i, q, turn) for i, q in enumerate(questions) for turn in (1, 2)]
        with self.loader(spec) as load:

            def backend() -> Backend:
                if load.loaded is None:  # warned as it loads, before it judges anything
                    self.warn_weak(judge, load().info.details.get("parameters"), models)
                return load()

            def ask(title: str, asked: list[tuple[Any, GenRequest]]) -> list[str]:
                made = self.generate(
                    f"judge {spec.label()} · {title}", weights, backend, [r for _, r in asked], [decoding] * len(asked)
                )
                return [g.text for g in made]

            if self.settings.single:
                for m in models:
                    answers = m.texts()
                    asked = [prompts.single(bench, q, answers[i], t) for i, q, t in slots]
                    texts = ask(f"grading {m.spec}", asked)
                    grades += [
                        Grade(spec.label(), m.spec, q.question_id, q.category, t, p.name, text, parse_rating(text))
                        for (_, q, t), (p, _), text in zip(slots, asked, texts, strict=True)
                    ]
            if self.settings.pairwise:
                base = models[0].texts()
                for m in models[1:]:
                    mine = m.texts()
                    asked = []
                    for i, q, t in slots:
                        asked += [
                            prompts.pairwise(bench, q, base[i], mine[i], t),
                            prompts.pairwise(bench, q, mine[i], base[i], t),
                        ]
                    texts = ask(f"{m.spec} vs baseline", asked)
                    for n, (_, q, t) in enumerate(slots):
                        one, two = texts[2 * n], texts[2 * n + 1]
                        pairs.append(
                            PairJudgement(
                                spec.label(),
                                m.spec,
                                q.question_id,
                                q.category,
                                t,
                                asked[2 * n][0].name,
                                one,
                                two,
                                parse_pair(one),
                                parse_pair(two),
                            )
                        )
            if load.loaded is None:  # every judgement was stored: its size as the run that loaded it recorded
                self.warn_weak(judge, load.parameters, models)
        return grades, pairs

    def warn_weak(self, judge: str, params: object, models: list[ModelAnswers]) -> None:
        """Warn where the judge (of ``params`` parameters) is smaller than 1B parameters or than a model it judges,
        or (size unknown, as behind a server) is named like a bundled model."""
        from flipscope.models.bundled import BUNDLED

        judged = [m.parameters for m in models if m.parameters]
        if isinstance(params, int):
            small = params < WEAK_JUDGE_PARAMETERS or any(params < p for p in judged)
            size = f"{params / 1e6:.0f}M parameters"
        else:
            small = judge.startswith("bundled:") or any(name.split("-")[0] in judge.lower() for name in BUNDLED)
            size = "the size of a bundled model"
        if small:
            self.note(
                f"weak judge: {judge} has {size}; judges this small often ignore the verdict format and change "
                "their verdict with the answers' order — read its grades as a smoke test, not a measurement "
                "(use a judge larger than the models judged)"
            )

    def note(self, message: str) -> None:
        log.warning(message)
        if message not in self.notes:
            self.notes.append(message)


def teacher_scores(questions: list[Question], answers: ModelAnswers, teacher: PassResult | None) -> list[ItemScore]:
    """Per question and turn, this model's answer with its teacher-forced numbers on the baseline's answer."""
    scored = {s.item_id: s for s in teacher.scores} if teacher else {}
    out = []
    for q, turns in zip(questions, answers.turns, strict=True):
        for turn, g in enumerate(turns, start=1):
            item = f"{q.question_id}-{turn}"
            t = scored.get(item)
            free = free_answer(g, t, Graded(NO_ANSWER, False, False))
            out.append(ItemScore("mtbench", item, q.category, 0, (), (), t.token_kl if t else None, free))
    return out


def load_bench(settings: MTBenchSettings) -> MTBench:
    return load_mtbench(Path(settings.data) if settings.data else None)


def check_settings(settings: MTBenchSettings) -> None:
    if not (settings.single or settings.pairwise) and settings.judge:
        raise FlipscopeError(
            "judging asked for with neither single grades nor pairwise verdicts",
            fix="drop --no-single or --no-pairwise",
        )
    if settings.max_new_tokens < 1 or settings.judge_max_tokens < 1 or settings.batch_size < 1:
        raise FlipscopeError("--max-new-tokens, --judge-max-tokens and --batch-size must be at least 1")
    if settings.limit is not None and settings.limit < 1:
        raise FlipscopeError(f"--limit must be at least 1, got {settings.limit}")
    if settings.ray is not None and settings.ray.replicas != 1:
        raise FlipscopeError(
            "--replicas: a model's answers are generated in whole calls, as a local run makes them (split, their "
            "batches and random streams would differ), so mtbench runs one actor per model",
            fix="drop --replicas; the models already answer in parallel, one actor each",
        )
