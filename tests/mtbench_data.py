"""A stand-in for FastChat's MT-Bench files (laid out like ``llm_judge/data``): 2 questions per category, made-up
text, judge prompts with the same names and placeholders as FastChat's (not its wording)."""

from __future__ import annotations

import json
from pathlib import Path

CATEGORIES = ("writing", "roleplay", "reasoning", "math", "coding", "extraction", "stem", "humanities")
REF = ("math", "reasoning", "coding")

PROMPTS = {
    "single-v1": ("Grade fairly.", "Q={question}\nA={answer}\nRate [[n]]."),
    "single-math-v1": ("Grade fairly.", "Q={question}\nREF={ref_answer_1}\nA={answer}\nRate [[n]]."),
    "single-v1-multi-turn": ("Grade turn 2.", "Q1={question_1}\nA1={answer_1}\nQ2={question_2}\nA2={answer_2}"),
    "single-math-v1-multi-turn": (
        "Grade turn 2.",
        "Q1={question_1}\nR1={ref_answer_1}\nQ2={question_2}\nR2={ref_answer_2}\nA1={answer_1}\nA2={answer_2}",
    ),
    "pair-v2": ("Compare.", "Q={question}\n<A>{answer_a}</A>\n<B>{answer_b}</B>"),
    "pair-math-v1": ("Compare.", "Q={question}\nREF={ref_answer_1}\n<A>{answer_a}</A>\n<B>{answer_b}</B>"),
    "pair-v2-multi-turn": (
        "Compare turn 2.",
        "Q1={question_1}\nQ2={question_2}\n<A>{answer_a_1}|{answer_a_2}</A>\n<B>{answer_b_1}|{answer_b_2}</B>",
    ),
    "pair-math-v1-multi-turn": (
        "Compare turn 2.",
        "R={ref_answer_1}|{ref_answer_2}\nQ1={question_1}\nQ2={question_2}\n<A>{answer_a_1}|{answer_a_2}</A>\n"
        "<B>{answer_b_1}|{answer_b_2}</B>",
    ),
}


def write_mtbench(folder: Path, per_category: int = 2) -> Path:
    (folder / "mt_bench" / "reference_answer").mkdir(parents=True, exist_ok=True)
    questions, references = [], []
    qid = 100
    for category in CATEGORIES:
        for n in range(per_category):
            qid += 1
            questions.append(
                {
                    "question_id": qid,
                    "category": category,
                    "turns": [f"{category} question {n} {{braces}}", f"follow-up {qid}"],
                }
            )
            if category in REF:
                references.append(
                    {"question_id": qid, "choices": [{"index": 0, "turns": [f"ref{qid}a", f"ref{qid}b"]}]}
                )
    lines = [
        json.dumps(
            {
                "name": k,
                "type": "pairwise" if k.startswith("pair") else "single",
                "system_prompt": v[0],
                "prompt_template": v[1],
            }
        )
        for k, v in PROMPTS.items()
    ]
    (folder / "mt_bench" / "question.jsonl").write_text("".join(json.dumps(q) + "\n" for q in questions))
    (folder / "mt_bench" / "reference_answer" / "gpt-4.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in references)
    )
    (folder / "judge_prompts.jsonl").write_text("\n".join(lines) + "\n")
    return folder
