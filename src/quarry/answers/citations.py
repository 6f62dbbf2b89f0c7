"""Citations in a model's answer: [n] markers checked against the numbered passages it read.

The model is told to cite as [n]; models also write groups ([1, 2], [1-3]). Each number is
checked, a group is written out as single markers, and numbers that name no passage are
removed. Brackets inside code are indexes, never citations. A stored answer entering a later
prompt has its markers taken out (``without_citations``): that prompt numbers its own passages
from [1] again, and an old [1] would otherwise read as the new passage 1.
"""

from __future__ import annotations

import re

# A citation: one bracket of numbers, alone ([3]) or grouped ([1, 2], [1-3], [1; 4]), with
# the horizontal space before it (dropped with it when none of its numbers names a passage).
_CITATION = re.compile(
    r"(?P<lead>[ \t]*)\[\s*(?P<numbers>\d{1,4}(?:\s*(?:,|;|-|\u2013|\u2014)\s*\d{1,4})*)\s*\]"
)
_CITED_NUMBER = re.compile(r"(\d+)(?:\s*(?:-|\u2013|\u2014)\s*(\d+))?")
_MAX_RANGE = 20  # a range of more numbers than this ([1-2019]) is read as its two ends
# Code, where [n] is an index and never a citation: fenced blocks, then inline spans.
_CODE = re.compile(r"(```.*?(?:```|\Z)|~~~.*?(?:~~~|\Z)|`[^`\n]+`)", re.DOTALL)
_CLOSES = frozenset(".,;:!?)")


def clean_citations(answer: str, numbers: set[int]) -> tuple[str, list[int], list[int]]:
    """The answer with every citation written as [n] naming a passage of ``numbers``; the
    numbers cited, in order of first citation; and the numbers that named no passage (each
    removed). A group ([1, 2], [1-3]) is written as its passages' markers ([1][2]), so a
    client that reads [n] finds every source; a citation naming none is removed with the
    space before it. Brackets inside code (fenced or inline) are left as they are."""
    cited: list[int] = []
    unknown: list[int] = []

    def check(match: re.Match[str]) -> str:
        kept: list[int] = []
        for n in _numbers(match.group("numbers")):
            known = n in numbers
            if known and n not in kept:
                kept.append(n)
            seen = cited if known else unknown
            if n not in seen:
                seen.append(n)
        if kept:
            return match.group("lead") + "".join(f"[{n}]" for n in kept)
        following = match.string[match.end() : match.end() + 1]
        if not following or following.isspace() or following in _CLOSES:
            return ""
        return match.group("lead")

    parts = _CODE.split(answer)  # odd indexes hold code
    text = "".join(part if i % 2 else _CITATION.sub(check, part) for i, part in enumerate(parts))
    return text.strip(), cited, unknown


def _numbers(group: str) -> list[int]:
    found: list[int] = []
    for match in _CITED_NUMBER.finditer(group):
        first, last = int(match.group(1)), match.group(2)
        if last is not None and first <= int(last) <= first + _MAX_RANGE:
            found.extend(range(first, int(last) + 1))
        else:
            found.append(first)
            if last is not None:
                found.append(int(last))
    return found


def without_citations(text: str) -> str:
    """The text with every citation removed (code left as it is)."""
    return clean_citations(text, set())[0]
