"""Citations in a model's answer: [n] markers checked against the numbered passages it read.

The model is told to cite as [n]; models also write groups ([1, 2], [1-3]). Each number is
checked, a group is written out as single markers, and numbers that name no passage are
removed. Brackets inside code are indexes, never citations. A stored answer entering a later
prompt has its markers taken out (``without_citations``): that prompt numbers its own passages
from [1] again, and an old [1] would otherwise read as the new passage 1.
"""

from __future__ import annotations

import re

# A citation: one bracket of numbers, alone ([3]) or grouped ([1, 2], [1-3], [1; 4]). The
# spaces it may hold are bounded, and so is the work of every match: answers and a client's
# history are read with it, and an unbounded run of spaces would cost quadratic time.
_GAP = r"[ \t]{0,3}"
_CITATION = re.compile(
    rf"\[{_GAP}(?P<numbers>\d{{1,4}}(?:{_GAP}(?:,|;|-|\u2013|\u2014){_GAP}\d{{1,4}})*){_GAP}\]"
)
_CITED_NUMBER = re.compile(r"(\d+)(?:[ \t]*(?:-|\u2013|\u2014)[ \t]*(\d+))?")
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
    out: list[str] = []
    for i, part in enumerate(_CODE.split(answer)):  # odd indexes hold code
        if i % 2:
            out.append(part)
            continue
        done = 0
        for match in _CITATION.finditer(part):
            out.append(part[done : match.start()])
            done = match.end()
            kept: list[int] = []
            for n in _numbers(match.group("numbers")):
                known = n in numbers
                if known and n not in kept:
                    kept.append(n)
                seen = cited if known else unknown
                if n not in seen:
                    seen.append(n)
            if kept:
                out.append("".join(f"[{n}]" for n in kept))
                continue
            following = part[done : done + 1]
            if not following or following.isspace() or following in _CLOSES:
                _strip_trailing_space(out)  # "wind [9]." -> "wind.", "wind [8][9]." too
        out.append(part[done:])
    return "".join(out).strip(), cited, unknown


def _strip_trailing_space(out: list[str]) -> None:
    for k in range(len(out) - 1, -1, -1):
        out[k] = out[k].rstrip(" \t")
        if out[k]:
            return


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
