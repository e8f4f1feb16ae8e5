"""Bounded memory of option scoring: each chunk's rows are reduced to what is kept before the next chunk runs."""

from __future__ import annotations

import subprocess
import sys

_OPTIONS_PROBE = """
import resource, torch
from transformers import LlamaConfig, LlamaForCausalLM
from flipscope.passes.scoring import TopKRecorder
from flipscope.models._hf_score import PrefixScorer
from flipscope.tasks import ScoreRequest

class Words:  # one token per word
    bos_token_id = None
    pad_token_id = 0
    def encode(self, text, add_special_tokens=False):
        return [1 + sum(map(ord, w)) % 997 for w in text.split()]

torch.manual_seed(0)
config = LlamaConfig(vocab_size=150_000, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                     num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=512)
model = LlamaForCausalLM(config).eval()
scorer = PrefixScorer(model, Words(), "cpu", label="probe")
requests = [ScoreRequest("Header words here.", f" Question {q} about things? Answer:",
                         tuple(" " + " ".join(f"w{q}{o}{t}" for t in range(30)) for o in range(4))) for q in range(8)]
recorder = TopKRecorder(128, 64, None)  # what a baseline pass keeps: the compact form
shapes = set()
def sink(i, o, rows):
    shapes.add(rows.shape)
    recorder(i, o, rows)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
scored = scorer.score(requests, rows=sink)
grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
assert shapes == {(30, 150_000)} and len(recorder.parts) == 32
print(len(scored), round(grown))
"""


def test_option_scoring_with_a_large_vocabulary_runs_in_bounded_memory() -> None:
    """8 questions × 4 options × 30 tokens × 150k vocabulary: 576 MB of float32 rows if all were held at once
    (measured before this bound: 679 MB of growth); the scorer keeps one chunk's rows at a time."""
    proc = subprocess.run([sys.executable, "-c", _OPTIONS_PROBE], capture_output=True, text=True, check=True)
    n, grown_mb = (int(x) for x in proc.stdout.split())
    assert n == 8
    assert grown_mb < 400, f"peak RSS grew by {grown_mb} MB"
