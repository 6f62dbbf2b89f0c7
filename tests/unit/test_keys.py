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
