import string

from hypothesis import given
from hypothesis import strategies as st

from quarry.auth import keys


def test_generated_key_has_visible_prefix_and_verifies() -> None:
    new = keys.generate()
    assert new.secret.startswith(new.prefix + "_")
    assert keys.prefix_of(new.secret) == new.prefix
    assert keys.matches(new.secret, new.hash)
    assert not keys.matches(new.secret + "x", new.hash)
    assert new.secret not in new.hash.hex()


def test_keys_are_unique() -> None:
    made = {keys.generate().secret for _ in range(200)}
    assert len(made) == 200


def test_malformed_keys_have_no_prefix() -> None:
    good = keys.generate().secret
    for bad in [
        "",
        "qk_",
        good[:-1],
        good + "a",
        good + "\n",
        good.upper(),
        "Bearer " + good,
        "sk_" + good[3:],
    ]:
        assert keys.prefix_of(bad) is None, bad


@given(st.text(alphabet=string.printable, max_size=120))
def test_prefix_of_never_raises_and_accepts_only_the_format(text: str) -> None:
    prefix = keys.prefix_of(text)
    if prefix is not None:
        assert text.startswith(prefix + "_")
        assert len(text) == len(prefix) + 1 + 43


def test_redaction_hides_every_secret_and_keeps_prefixes() -> None:
    new = keys.generate()
    secret = new.secret.split("_", 2)[2]
    for text in (
        f"/keys/{new.secret}",
        f"/keys/{new.secret}x?limit=1",  # mistyped
        f"no API key '{new.secret[:-5]}'",  # cut short
        f"Bearer {new.secret}\nnext line",
    ):
        hidden = keys.redact(text)
        assert secret[:20] not in hidden
        assert f"{new.prefix}_***" in hidden
    assert keys.redact(f"key {new.prefix} listed") == f"key {new.prefix} listed"
    assert keys.redact("/keys/qk_abcdefghij_s3cret?limit=1") == "/keys/qk_abcdefghij_***?limit=1"


@given(st.text(alphabet=string.ascii_letters + string.digits + "_-", min_size=1, max_size=60))
def test_redaction_leaves_no_secret_after_a_prefix(tail: str) -> None:
    assert keys.redact(f"x qk_abcdefghij_{tail} y") == "x qk_abcdefghij_*** y"
