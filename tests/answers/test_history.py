"""Which earlier turns enter the prompt (a pure function; words are tokens here)."""

from __future__ import annotations

from quarry.answers.history import TURN_OVERHEAD, StoredTurn, select_history


def count(text: str) -> int:
    return len(text.split())


def turns(*contents: str) -> list[StoredTurn]:
    """Oldest first in, newest first out, as the store gives them."""
    made = [
        StoredTurn(seq, "user" if seq % 2 else "assistant", text, count(text))
        for seq, text in enumerate(contents, start=1)
    ]
    return list(reversed(made))


def test_the_newest_turns_that_fit_are_kept_in_order() -> None:
    past = turns("one two", "three four five", "six", "seven eight")
    history = select_history("", past, 2 * (2 + TURN_OVERHEAD) + 1 + TURN_OVERHEAD, count)
    assert [m.content for m in history.turns] == ["six", "seven eight"]
    assert [m.role for m in history.turns] == ["user", "assistant"]
    assert history.tokens == 1 + 2 + 2 * TURN_OVERHEAD
    assert history.tokens <= history.budget
    assert (history.left_out, history.left_out_through) == (2, 2)


def test_the_walk_stops_at_the_first_turn_that_does_not_fit() -> None:
    past = turns("a", "b c d e f g h i j k l m n o p", "q")  # the middle one is too big
    history = select_history("", past, 2 * (1 + TURN_OVERHEAD), count)
    assert [m.content for m in history.turns] == ["q"]  # "a" would fit, but not across a gap
    assert history.left_out_through == 2


def test_the_summary_is_paid_first_and_dropped_when_it_cannot_fit() -> None:
    past = turns("hello there", "hi")
    summary = "they talked about tides"
    history = select_history(summary, past, 100, count)
    assert history.summary == summary
    assert history.summarized
    assert history.tokens == count(summary) + 3 + 3 * TURN_OVERHEAD
    tight = select_history(summary, past, 2 + TURN_OVERHEAD, count)
    assert tight.summary == ""
    assert [m.content for m in tight.turns] == ["hi"]


def test_answers_without_text_are_skipped_and_nothing_fits_in_zero() -> None:
    past = turns("question", "", "again")
    history = select_history("", past, 100, count)
    assert [m.content for m in history.turns] == ["question", "again"]
    empty = select_history("a summary", past, 0, count)
    assert (empty.turns, empty.summary, empty.tokens) == ([], "", 0)
    assert empty.left_out_through == 3


def test_the_prompt_alternates_user_and_assistant_beginning_with_the_user() -> None:
    from quarry.answers.ask import _alternating

    turns = [
        {"role": "assistant", "content": "an answer whose question fell out"},
        {"role": "user", "content": "first"},
        {"role": "user", "content": "second (its answer failed)"},
        {"role": "assistant", "content": "reply"},
        {"role": "user", "content": "now"},
    ]
    assert _alternating(turns) == [
        {"role": "user", "content": "first\n\nsecond (its answer failed)"},
        {"role": "assistant", "content": "reply"},
        {"role": "user", "content": "now"},
    ]
