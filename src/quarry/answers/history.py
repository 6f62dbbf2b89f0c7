"""Which earlier turns of a conversation enter the prompt, within the history budget.

The newest turns come first: walking back from the latest, each turn is kept while it fits,
and the walk stops at the first that does not (a gap in the middle would read as a different
conversation). Turns older than those kept are represented by the conversation's rolling
summary once the summarise job has folded them in; until then they are ``left_out``, and the
caller asks the job to summarise them. An answer enters without its [n] markers (they named
the passages of its own prompt), still counted at its stored size.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from quarry.answers.citations import without_citations
from quarry.gateway.types import Message

TURN_OVERHEAD = 4  # the chat template's tokens around one message (role markers, ends)


@dataclass(frozen=True)
class StoredTurn:
    seq: int
    role: str
    content: str
    tokens: int


@dataclass(frozen=True)
class History:
    summary: str  # "" when the summary is not in the prompt
    turns: list[Message]  # oldest first
    tokens: int
    budget: int
    left_out_through: int  # the newest seq neither kept nor summarised (0: none)
    left_out: int
    # The newest seq the summary should fold in: what the configured history budget cannot
    # keep. The same as left_out_through unless one request had less room (Answers.prepare).
    fold_through: int

    @property
    def summarized(self) -> bool:
        return bool(self.summary)


def select_history(
    summary: str,
    newest_first: Sequence[StoredTurn],
    budget: int,
    count_tokens: Callable[[str], int],
) -> History:
    """``newest_first``: the turns the summary does not hold yet, newest first. The summary
    is paid for first (when it fits at all), then turns while they fit."""
    used = 0
    kept_summary = ""
    if summary:
        cost = count_tokens(summary) + TURN_OVERHEAD
        if cost <= budget:
            kept_summary, used = summary, cost
    kept: list[StoredTurn] = []
    left: list[StoredTurn] = []
    for turn in newest_first:
        if not turn.content.strip():
            continue  # a failed answer with no text says nothing to the model
        cost = turn.tokens + TURN_OVERHEAD
        if left or used + cost > budget:
            left.append(turn)
            continue
        kept.append(turn)
        used += cost
    # An answer's [n] named the passages of its own prompt; this prompt numbers others.
    turns = [
        Message("user", t.content)
        if t.role == "user"
        else Message("assistant", without_citations(t.content))
        for t in kept
    ]
    turns.reverse()
    return History(
        summary=kept_summary,
        turns=turns,
        tokens=used,
        budget=budget,
        left_out_through=max((t.seq for t in left), default=0),
        left_out=len(left),
        fold_through=max((t.seq for t in left), default=0),
    )
