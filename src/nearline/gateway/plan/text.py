"""A plan's text: the task it is given, the steps read from the planner's answer, and the
preliminary text shown while it runs."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from nearline.core.request import ChatRequest

_NUMBERED = re.compile(r"^\s*(?:step\s*)?(\d+)\s*[.):-]\s*(.+?)\s*$", re.IGNORECASE)


def task_of(request: ChatRequest) -> str:
    """The task: the one message's text, or the conversation as ``role: text`` lines."""
    messages = [m for m in request.messages if m.text]
    if len(messages) == 1:
        return messages[0].text
    return "\n".join(f"{m.role}: {m.text}" for m in messages)


def parse_steps(text: str, max_steps: int) -> list[str]:
    """The numbered lines ("1. ...", "2) ...", "Step 3: ..."), at most ``max_steps``.

    A usable plan has at least one; lines that are not numbered are ignored (the planner's
    preamble), so an answer that is not a plan gives none.
    """
    steps = [m.group(2) for line in text.splitlines() if (m := _NUMBERED.match(line))]
    return steps[:max_steps]


def numbered(steps: Sequence[str]) -> str:
    return "\n".join(f"{n}. {step}" for n, step in enumerate(steps, 1))


def rendered(
    plan: str,
    steps: Sequence[str] = (),
    results: Mapping[int, str] | None = None,
    streaming: Mapping[int, str] | None = None,
) -> str:
    """The preliminary text: the plan, then each step done or under way, in step order."""
    done, going = results or {}, streaming or {}
    sections = [f"Plan:\n{plan.strip()}"]
    for number in range(1, len(steps) + 1):
        if number in done:
            sections.append(f"Step {number}: {steps[number - 1]}\n{done[number].strip()}")
        elif number in going:
            sections.append(f"Step {number}: {steps[number - 1]}\n{going[number].strip()} …")
    return "\n\n".join(sections)
