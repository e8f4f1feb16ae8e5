"""Shared fixtures: a tiny randomly initialised Llama built in the test, and a scripted mock backend."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from flipscope.models import ModelInfo, ModelSpec, OptionScores, RowSink, Source, register_source
from flipscope.models.base import (
    Capabilities,
    Decoding,
    Generation,
    GenRequest,
    StopReason,
    TopKRows,
    cut_at_stop,
)
from flipscope.tasks import ScoreRequest

# --- hermetic caches -------------------------------------------------------------------------------------------


def pytest_configure(config: pytest.Config) -> None:
    """The session's e2e cache, set before any fixture runs: module-scoped fixtures (a llama.cpp server started
    once per module) run before the per-test environment below, and without this they fell back to the user's
    cache. $FLIPSCOPE_TEST_CACHE where set (CI keeps one between runs), else a temporary folder."""
    _SESSION_CACHE.append(os.environ.get("FLIPSCOPE_TEST_CACHE") or tempfile.mkdtemp(prefix="flipscope-e2e-cache-"))
    os.environ["FLIPSCOPE_CACHE"] = _SESSION_CACHE[0]


@pytest.fixture(scope="session")
def e2e_cache() -> Path:
    """One cache for the session's end-to-end tests (the bundled model is fetched and converted once per session):
    the folder pytest_configure chose — never the user's."""
    return Path(_SESSION_CACHE[0])


_SESSION_CACHE: list[str] = []


@pytest.fixture(autouse=True)
def _hermetic(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
              monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """Every test gets its own cache; outside the e2e tier downloads fail (FLIPSCOPE_NO_DOWNLOAD), so a test that
    would fetch anything fails instead of touching the network; the hub is off for every test."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    if request.node.get_closest_marker("e2e"):
        monkeypatch.setenv("FLIPSCOPE_CACHE", str(request.getfixturevalue("e2e_cache")))
        monkeypatch.delenv("FLIPSCOPE_NO_DOWNLOAD", raising=False)
    else:
        monkeypatch.setenv("FLIPSCOPE_CACHE", str(tmp_path_factory.mktemp("cache")))
        monkeypatch.setenv("FLIPSCOPE_NO_DOWNLOAD", "1")


CORPUS = [
    "The capital of France is Paris. The capital of Italy is Rome.",
    "Question: What is two plus two? Answer: four. Water boils at one hundred degrees.",
    "The following are questions (with answers) about science and history.",
    "Mercury Venus Earth Mars Jupiter Saturn Uranus Neptune are planets of the sun.",
]


def make_tokenizer(folder: Path, vocab_size: int, corpus: Sequence[str] = CORPUS) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<pad>", "<s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(corpus, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>")
    fast.save_pretrained(folder)


def make_tiny_llama(folder: Path, *, seed: int = 0, vocab_size: int = 320, corpus: Sequence[str] = CORPUS,
                    layers: int = 2) -> Path:  # fmt: skip
    """A Llama of ``layers`` layers with random weights and a BPE tokenizer trained on a few sentences."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    make_tokenizer(folder, vocab_size, corpus)
    from transformers import AutoTokenizer

    n_vocab = len(AutoTokenizer.from_pretrained(folder))
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=n_vocab,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=False,
        pad_token_id=0,
    )
    model = LlamaForCausalLM(config)
    with torch.no_grad():  # sharper than the default init so that answers differ between items
        for p in model.parameters():
            p.mul_(4.0) if p.dim() > 1 else None
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def tiny_llama_other_vocab(tmp_path_factory: pytest.TempPathFactory) -> Path:
    corpus = [s.upper() for s in CORPUS] + ["zebra quartz vexing jumbo fjord glyph"]
    return make_tiny_llama(tmp_path_factory.mktemp("tiny-llama-2"), seed=1, vocab_size=300, corpus=corpus)


@pytest.fixture
def mc_file(tmp_path: Path) -> Path:
    rows = [
        {
            "id": f"q{i}",
            "question": f"Which planet is number {i % 4 + 1}?",
            "subject": ["astro", "geo"][i % 2],
            "choices": ["Mercury", "Venus", "Earth", "Mars"],
            "answer": i % 4,
        }
        for i in range(12)
    ]
    path = tmp_path / "planets.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


# --- scripted mock backend -------------------------------------------------------------------------------------


@dataclass
class Script:
    """What a mock model answers: ``logprobs(request_index, request) -> per-option log-likelihoods``;
    ``rows(request_index, option) -> [T, V]`` log-probabilities for token KL. ``topk`` > 0: the mock behaves like
    a server, handing over only each row's top-k as token text ("t<id>") → log-prob."""

    logprobs: Callable[[int, ScoreRequest], tuple[float, ...]]
    rows: Callable[[int, int], np.ndarray] | None = None
    tokenizer: str = "mock-vocab"
    vocab: int = 16
    topk: int = 0
    max_context: int = 10_000
    multiple_choice: bool = True
    calls: list[int] = field(default_factory=list)
    #: prompt → generated text (before stop strings are applied)
    answer: Callable[[str], str] = lambda prompt: f"answer to {prompt}"
    #: (prompt, seed) → the text drawn at a temperature above 0 (None: ``answer``'s, whatever the seed)
    draw: Callable[[str, int], str] | None = None
    generated: list[int] = field(default_factory=list)  # requests per generate call
    #: request index, request → whether each option is the greedy decoding (None: the backend cannot tell)
    greedy: Callable[[int, ScoreRequest], tuple[bool, ...]] | None = None


def mock_pieces(vocab: int) -> list[str]:
    return [f"t{i}" for i in range(vocab)]


SCRIPTS: dict[str, Script] = {}


class MockBackend:
    def __init__(self, spec: ModelSpec, script: Script) -> None:
        self.script = script
        rows = "topk" if script.topk else "full"
        caps = Capabilities(
            multiple_choice=script.multiple_choice,
            rows=rows,
            topk=script.topk,
            greedy=script.greedy is not None,
            max_context=script.max_context,
            note="its server returns no prompt log-probabilities",
            fix="serve it elsewhere",
        )
        self.info = ModelInfo(spec.label(), script.vocab, script.tokenizer, {"mock": True}, caps)

    def score(
        self,
        requests: Sequence[ScoreRequest],
        *,
        rows: RowSink | None = None,
        advance: Callable[[int], None] | None = None,
    ) -> list[OptionScores]:
        self.script.calls.append(len(requests))
        out = []
        for i, request in enumerate(requests):
            lps = self.script.logprobs(i, request)
            if rows is not None and self.script.rows is not None:
                for o in range(len(request.continuations)):
                    full = self.script.rows(i, o)  # [T, V]
                    rows(i, o, self._topk(full) if self.script.topk else full)
            greedy = self.script.greedy(i, request) if self.script.greedy is not None else None
            out.append(OptionScores(tuple(lps), tuple(1 for _ in lps), greedy))
            if advance:
                advance(1)
        return out

    def _topk(self, full: np.ndarray) -> TopKRows:
        names = mock_pieces(full.shape[1])
        top = np.argsort(-full, axis=-1)[:, : self.script.topk]  # [T, k]
        return TopKRows(tuple({names[j]: float(row[j]) for j in ids} for row, ids in zip(full, top, strict=True)))

    def vocabulary_pieces(self) -> list[str]:
        return mock_pieces(self.script.vocab)

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def generate(
        self, requests: Sequence[GenRequest], decoding: Decoding, *, advance: Callable[[int], None] | None = None
    ) -> list[Generation]:
        self.script.generated.append(len(requests))
        out = []
        for request in requests:
            draw = self.script.draw if decoding.temperature > 0 else None
            said = draw(request.prompt, decoding.seed) if draw is not None else self.script.answer(request.prompt)
            text, stopped = cut_at_stop(said, decoding.stop)
            reason = StopReason.STOP if stopped else StopReason.EOS
            out.append(Generation(text, reason, len(request.prompt), len(text), tuple(ord(c) for c in text)))
            if advance:
                advance(1)
        return out

    def chat_prompt(self, request: GenRequest) -> str:
        """The scripted chat template: one line per message, then the assistant's cue."""
        return "".join(f"{m['role']}: {m['content']}\n" for m in request.messages()) + "assistant:"

    def close(self) -> None:
        pass


register_source(
    Source(
        "mock",
        "scripted test backend",
        lambda location: {"mock": location, "tokenizer": SCRIPTS[location].tokenizer},
        lambda spec, options: MockBackend(spec, SCRIPTS[spec.location]),
    )
)


@pytest.fixture
def scripts() -> dict[str, Script]:
    SCRIPTS.clear()
    return SCRIPTS


@pytest.fixture(scope="session")
def cluster() -> Iterator[Any]:
    """A real Ray cluster on this machine: two one-CPU nodes, a head and a worker, each a raylet of its own."""
    cluster_utils = pytest.importorskip("ray.cluster_utils")
    made = cluster_utils.Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    made.add_node(num_cpus=1)
    made.wait_for_nodes()
    yield made
    made.shutdown()


@pytest.fixture
def actor_threads() -> Iterator[None]:
    """The driver's torch computes with one thread, as a Ray actor with num_cpus=1 does (Ray sets its
    OMP_NUM_THREADS to it): float32 sums in a matmul depend on the thread count, so a local run compared bit for bit
    with a run on Ray must use the same count."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
