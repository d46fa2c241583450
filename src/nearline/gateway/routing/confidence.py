"""How sure is the cheap tier of its answer? Scores in 0..1 for the cascade's threshold.

Token log-probabilities would be the natural signal, but the local model does not expose
them yet and most routes do not ask for them. Two scorers instead:

``HeuristicConfidence`` reads the answer for the failure modes small models show most:

* nothing said (empty answer) → 0;
* cut off by the token limit (``finish_reason: length``) → times 0.5: the answer is incomplete;
* hedging or refusal ("I'm not sure", "I don't know", "I cannot", "as an AI") → times 0.3: the
  model says itself that it does not know;
* repetition loops (the share of repeated word trigrams, typical of a small model that has
  lost its way) → times (1 - share).

It costs nothing and catches visible failures; it cannot see a fluent wrong answer. For
that, ``VerifierConfidence`` asks a model (usually a stronger tier) to grade the answer
yes/no, at the cost of one short call.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Protocol

from nearline.core.events import CollectedAnswer
from nearline.core.provider import Provider, ProviderCall
from nearline.core.request import Message
from nearline.gateway.routing.collect import ask, prompt_call

_HEDGES = re.compile(
    r"\b(i'?m not (sure|certain)|i do not know|i don'?t know|i cannot|i can'?t|"
    r"i am unable|i'?m unable|as an ai|not enough information|unclear|it depends)\b",
    re.IGNORECASE,
)


@dataclass(frozen=True, slots=True)
class Confidence:
    value: float
    reasons: tuple[str, ...] = ()


class ConfidenceScorer(Protocol):
    async def score(self, call: ProviderCall, answer: CollectedAnswer) -> Confidence: ...


def repeated_trigram_share(text: str) -> float:
    words = text.lower().split()
    trigrams = [tuple(words[i : i + 3]) for i in range(len(words) - 2)]
    if not trigrams:
        return 0.0
    return 1 - len(set(trigrams)) / len(trigrams)


class HeuristicConfidence:
    async def score(self, call: ProviderCall, answer: CollectedAnswer) -> Confidence:
        return heuristic_confidence(answer)


def heuristic_confidence(answer: CollectedAnswer) -> Confidence:
    text = answer.text.strip()
    if not text:
        return Confidence(0.0, ("empty",))
    value = 1.0
    reasons: list[str] = []
    if answer.finish_reason == "length":
        value *= 0.5
        reasons.append("truncated")
    if _HEDGES.search(text):
        value *= 0.3
        reasons.append("hedges")
    repeated = repeated_trigram_share(text)
    if repeated > 0:
        value *= 1 - repeated
        reasons.append(f"repeats {repeated:.0%}")
    return Confidence(value, tuple(reasons))


_VERIFY_PROMPT = (
    "Question:\n{question}\n\nProposed answer:\n{answer}\n\n"
    "Is the proposed answer correct and complete? Reply with one word: yes or no."
)


class VerifierConfidence:
    """Ask ``provider`` (e.g. the strong tier) to grade the answer: yes → 0.9, no → 0.1."""

    def __init__(self, provider: Provider, upstream_model: str) -> None:
        self._provider = provider
        self._upstream_model = upstream_model

    async def score(self, call: ProviderCall, answer: CollectedAnswer) -> Confidence:
        question = "\n".join(m.text for m in call.request.messages if m.role == "user")
        prompt = _VERIFY_PROMPT.format(question=question, answer=answer.text)
        verdict = await ask(
            self._provider,
            prompt_call(call, self._upstream_model, [Message(role="user", content=prompt)], 4),
        )
        word = verdict.text.strip().lower()
        if word.startswith("yes"):
            return Confidence(0.9, ("verifier: yes",))
        if word.startswith("no"):
            return Confidence(0.1, ("verifier: no",))
        return Confidence(0.5, (f"verifier unclear: {word[:20]!r}",))
