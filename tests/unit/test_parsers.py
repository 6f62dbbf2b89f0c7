"""Each format's parser on real files, and each way a file can be unreadable."""

import io
import json
import os

import pytest

from quarry.errors import (
    BinaryContent,
    CorruptDocument,
    DocumentTooLarge,
    EmptyDocument,
    EncryptedDocument,
    UnsupportedFormat,
)
from quarry.ingest.parsers import Parsed, ParserRegistry
from tests import files

REGISTRY = ParserRegistry.builtin()


def parse(name: str, data: bytes):
    return REGISTRY.detect(name).parse(data)


def test_pdf_text_per_page_with_page_numbers() -> None:
    data = files.pdf(["Alpha page one text.", "Bravo page two text.", "Charlie three."], title="T")
    parsed = parse("report.pdf", data)
    assert parsed.title == "T"
    assert len(parsed.page_starts) == 3
    for page, word in enumerate(["Alpha", "Bravo", "Charlie"], start=1):
        offset = parsed.text.index(word)
        assert parsed.page_at(offset) == page


def test_docx_headings_become_markdown() -> None:
    data = files.docx_file(
        [("h1", "Handbook"), ("p", "Intro text."), ("h2", "Leave"), ("p", "Ask.")]
    )
    parsed = parse("handbook.docx", data)
    assert parsed.structured
    assert parsed.text.splitlines()[0] == "# Handbook"
    assert "## Leave" in parsed.text
    assert parsed.title == "Handbook"


def test_html_main_text_without_boilerplate() -> None:
    parsed = parse("page.html", files.HTML)
    assert "eleven percent" in parsed.text
    assert "Storage capacity doubled" in parsed.text
    for boilerplate in ("tracking", "Copyright", "newsletter", "Log in"):
        assert boilerplate not in parsed.text
    assert parsed.title == "Solar Report"


def test_markdown_text_json_csv() -> None:
    md = parse("notes.md", b"# Notes\n\nSome *text*.\n")
    assert md.structured
    assert md.title == "Notes"
    assert parse("a.txt", "héllo wörld\n".encode()).text == "héllo wörld\n"
    assert parse("b.txt", "\ufeffbom text".encode("utf-8")).text == "bom text"
    assert parse("c.txt", "utf16 text".encode("utf-16")).text == "utf16 text"
    assert json.loads(parse("d.json", b'{"a": [1, 2]}').text) == {"a": [1, 2]}
    assert parse("e.csv", b"name,age\nann,3\n").text == "name,age\nann,3\n"


def test_parsed_text_holds_nothing_postgres_cannot_store() -> None:
    """NUL (a PDF's extracted text, a UTF-16 file) and lone surrogates are replaced one for
    one, so page starts and chunk offsets stay true."""
    text = "page one\x00a\n\npage two \ud800 b"
    parsed = Parsed(text=text, title="t\x00", page_starts=(0, 11))
    assert parsed.text == "page one a\n\npage two \ufffd b"
    assert len(parsed.text) == len(text)
    assert parsed.title == "t "
    assert parse("u.txt", ("a long text " * 20 + "\x00end").encode("utf-16")).text.endswith(" end")
    assert "\x00" not in parse("n.pdf", files.pdf(["Tidal\x00power."])).text


def test_corrupt_pdf() -> None:
    with pytest.raises(CorruptDocument):
        parse("broken.pdf", b"%PDF-1.7\n" + os.urandom(2000))
    good = files.pdf(["Some text."])
    with pytest.raises((CorruptDocument, EmptyDocument)):
        parse("cut.pdf", good[: len(good) // 3])


def test_password_protected_pdf() -> None:
    with pytest.raises(EncryptedDocument):
        parse("secret.pdf", files.pdf(["Classified."], password="hunter2"))


def test_pdf_without_text() -> None:
    with pytest.raises(EmptyDocument):
        parse("blank.pdf", files.pdf([""]))


def test_binary_named_txt() -> None:
    with pytest.raises(BinaryContent):
        parse("image.txt", b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 20)
    with pytest.raises(BinaryContent):
        parse("latin1.txt", "café".encode("latin-1") * 10)
    with pytest.raises(BinaryContent):
        parse("controls.txt", b"a\x01\x02\x03\x04b" * 100)


def test_html_with_no_text() -> None:
    with pytest.raises(EmptyDocument):
        parse(
            "empty.html", b"<html><head><script>x=1</script></head><body> <div></div></body></html>"
        )


def test_whitespace_only_and_invalid_json() -> None:
    with pytest.raises(EmptyDocument):
        parse("blank.txt", b"  \n\t\n")
    with pytest.raises(CorruptDocument, match="line 1"):
        parse("bad.json", b'{"a": ')


def test_corrupt_docx() -> None:
    with pytest.raises(CorruptDocument):
        parse("broken.docx", b"PK\x03\x04 not really a zip")


def test_unsupported_extension_names_the_supported_ones() -> None:
    with pytest.raises(UnsupportedFormat, match=r"\.exe") as caught:
        REGISTRY.detect("setup.exe")
    assert ".pdf" in str(caught.value)
    assert REGISTRY.detect("page", "text/html; charset=utf-8").name == "html"
    with pytest.raises(UnsupportedFormat):
        REGISTRY.detect("noext", None)


# Small files that unpack to far more: refused while they are read, not after.


def test_a_docx_that_unpacks_past_its_limit_is_refused_before_it_is_unpacked() -> None:
    from quarry.ingest.parsers.docx import MAX_UNPACKED_BYTES

    bomb = files.docx_unpacking_to(MAX_UNPACKED_BYTES + 1)
    assert len(bomb) < 1024 * 1024
    with pytest.raises(DocumentTooLarge, match="unpacks to") as caught:
        REGISTRY.detect("bomb.docx").parse(bomb)
    assert caught.value.code == "document_too_large"
    # The same construction under the limit reads (a few megabytes of words).
    assert "word word" in parse("small.docx", files.docx_unpacking_to(4 * 1024 * 1024)).text


def test_a_pdf_of_too_many_pages_is_refused() -> None:
    from quarry.ingest.parsers.pdf import MAX_PAGES

    with pytest.raises(DocumentTooLarge, match=f"limit is {MAX_PAGES}"):
        parse("pages.pdf", files.pdf_of_one_stream(MAX_PAGES + 1, 1))


def test_a_pdf_stops_being_read_once_its_text_passes_the_limit() -> None:
    from pypdf import PdfReader

    from quarry.ingest.parsers.pdf import _page_texts

    # 50 pages drawing one stream of 200 lines: a few kilobytes, 50 times the stream's text.
    data = files.pdf_of_one_stream(50, 200)
    assert len(data) < 10_000
    per_page = len(_page_texts(PdfReader(io.BytesIO(files.pdf_of_one_stream(1, 200))))[0])
    assert len(parse("fine.pdf", data).text) > 50 * per_page
    with pytest.raises(DocumentTooLarge, match="characters of text"):
        _page_texts(PdfReader(io.BytesIO(data)), max_chars=10 * per_page)


def test_json_that_indents_to_too_much_text_is_refused() -> None:
    # 300 deep, every leaf of the innermost list indented by 600 spaces: 240 KB of JSON
    # would make about 70 million characters.
    deep = "[" * 300 + ",".join(["1"] * 120_000) + "]" * 300
    assert len(deep) < 250_000
    with pytest.raises(DocumentTooLarge, match="characters of text"):
        parse("deep.json", deep.encode())
    assert (
        parse("shallow.json", b"[[1, 2], [3]]").text
        == "[\n  [\n    1,\n    2\n  ],\n  [\n    3\n  ]\n]"
    )


def test_json_nested_past_the_interpreter_s_depth_is_corrupt() -> None:
    with pytest.raises(CorruptDocument, match="nested too deeply"):
        parse("nested.json", b"[" * 100_000 + b"]" * 100_000)


def test_whatever_a_parser_raises_is_a_permanent_document_error() -> None:
    from quarry.ingest.parsers import Format, read

    def broken(data: bytes) -> Parsed:
        raise KeyError("/Root")

    def exhausted(data: bytes) -> Parsed:
        raise MemoryError

    with pytest.raises(CorruptDocument, match="the odd cannot be read: KeyError"):
        read(Format("odd", (".odd",), broken), b"x")
    with pytest.raises(DocumentTooLarge, match="more memory"):
        read(Format("odd", (".odd",), exhausted), b"x")
    # A DocumentError stays what it is.
    with pytest.raises(EmptyDocument):
        read(REGISTRY.get("txt"), b"   ")


def test_a_docx_whose_media_unpack_past_the_limit_is_refused_too() -> None:
    import zipfile

    from quarry.ingest.parsers.docx import MAX_UNPACKED_BYTES

    out = io.BytesIO()
    with (
        zipfile.ZipFile(io.BytesIO(files.docx_file([("p", "seed")]))) as source,
        zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive,
    ):
        for item in source.infolist():
            archive.writestr(item, source.read(item.filename))
        with archive.open("word/media/image1.png", "w", force_zip64=True) as image:
            block = bytes(1024 * 1024)
            for _ in range(MAX_UNPACKED_BYTES // len(block) + 1):
                image.write(block)
    with pytest.raises(DocumentTooLarge, match="unpacks to"):
        parse("pictures.docx", out.getvalue())
