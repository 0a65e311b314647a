"""What a report says about the judge: how faithfulness was judged, what the figure is worth with the judge
used, and how the judge's verdicts agree with hand labels. The judging itself is eval.judge's work."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from eval.runner import AnswerRecord, RunConfig

JUDGE_METHOD = (
    "Faithfulness: each distinct sentence of an answer is put to the judge ({judge}) as a yes/no question "
    "against the chunks it cites (all retrieved chunks when it cites none). A claim is supported when "
    "P(yes) / (P(yes) + P(no)) for the first token of the judge's reply, read from the endpoint's logprobs "
    "with every spelling of yes and no summed, is above 0.5; where the endpoint gives no logprobs, when the "
    "reply's first word is yes. faithfulness is the share of supported claims, averaged over answers; "
    "faithfulness_p_yes is the mean of that probability. Refusals are not judged."
)
# Measured on the hand-labelled claims of tests/test_judge.py (SUPPORTED_AND_NOT) with the bundled llama-server.
SMOLLM2_CAVEAT = (
    "Caveat: the judge is SmolLM2-135M, and it cannot judge. On 20 hand-labelled claims (10 supported, 10 "
    "not) against real chunks of ragsvc's docs it was right on 10, in each of two runs (accuracy 0.50; ROC "
    "AUC 0.50 and 0.56: chance); "
    "its P(yes) sits near 0.33 whatever the claim, so nearly every claim counts as unsupported. Read "
    "faithfulness here as a figure the pipeline produced, not a measurement of the answers; pass "
    "--judge-url and --judge-model to judge with a larger model."
)


def judge_note(config: RunConfig) -> str:
    """How faithfulness was judged, and what the figure is worth with the judge used."""
    if not config.judge:
        return "Faithfulness was not judged (--no-judge)."
    note = JUDGE_METHOD.format(judge=config.judge)
    return f"{note} {SMOLLM2_CAVEAT}" if "smollm2" in config.judge.lower() else note


def judge_agreement(labels_file: Path, answers: dict[str, AnswerRecord]) -> dict[str, Any]:
    """The judge's verdicts against hand labels: JSONL lines {"key", "answer", "faithful": true/false}. An
    answer counts as judged faithful when every claim the judge read was supported. Labels of other runs'
    answers (another answer text for the key) are left out; a labelled answer the judge did not read (a
    refusal) counts as not judged."""
    pairs: list[tuple[bool, bool]] = []
    not_judged = 0
    labelled = 0
    for line in labels_file.read_text().splitlines():
        if not line.strip():
            continue
        label = json.loads(line)
        answer = answers.get(label["key"])
        if answer is None or answer.answer != label["answer"]:
            continue
        labelled += 1
        if answer.faithfulness is None:
            not_judged += 1
            continue
        pairs.append((answer.faithfulness == 1, bool(label["faithful"])))
    agree = sum(judged == labelled_as for judged, labelled_as in pairs)
    return {
        "labels_file": labels_file.name,
        "labelled": labelled,
        "compared": len(pairs),
        "agree": agree,
        "accuracy": agree / len(pairs) if pairs else None,
        "both_faithful": sum(j and lab for j, lab in pairs),
        "both_unfaithful": sum(not j and not lab for j, lab in pairs),
        "judge_only_faithful": sum(j and not lab for j, lab in pairs),
        "label_only_faithful": sum(lab and not j for j, lab in pairs),
        "not_judged": not_judged,
    }
