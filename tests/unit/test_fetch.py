"""URL documents are fetched only from public addresses unless a network is allowed: the
check is made on the address connected to, for the first request and every redirect."""

from __future__ import annotations

import ipaddress
import time

import pytest

from quarry.errors import InvalidInput, UrlNotAllowed, UrlTimeout
from quarry.ingest.fetch import fetch, is_public
from tests.support import StaticSite

LOOPBACK = [ipaddress.ip_network("127.0.0.0/8")]


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("8.8.8.8", True),
        ("2606:4700::1111", True),
        ("::ffff:8.8.8.8", True),
        ("127.0.0.1", False),
        ("127.3.2.1", False),
        ("::1", False),
        ("::ffff:127.0.0.1", False),  # IPv4 written as IPv6 is judged as IPv4
        ("10.1.2.3", False),
        ("172.16.0.1", False),
        ("192.168.1.1", False),
        ("169.254.169.254", False),  # a cloud's metadata service
        ("fe80::1", False),
        ("fd00::1", False),
        ("100.64.0.1", False),  # carrier-grade NAT
        ("0.0.0.0", False),
        ("224.0.0.1", False),
        ("192.0.2.1", False),  # documentation range
        # IPv6 that carries an IPv4 address leads where that one does.
        ("64:ff9b::7f00:1", False),  # NAT64 to 127.0.0.1
        ("64:ff9b::808:808", True),  # NAT64 to 8.8.8.8
        ("64:ff9b:1::a00:5", False),  # local-use NAT64 to 10.0.0.5
        ("2002:7f00:1::", False),  # 6to4 of 127.0.0.1
        ("2002:808:808::", True),
        ("::127.0.0.1", False),  # IPv4-compatible
        ("fec0::1", False),  # site-local
        ("2001:0:4136:e378:8000:63bf:3fff:fdd2", False),  # Teredo
    ],
)
def test_public_addresses(address: str, public: bool) -> None:
    assert is_public(ipaddress.ip_address(address)) is public


@pytest.mark.parametrize(
    "host",
    ["127.0.0.1", "localhost", "2130706433", "0x7f000001", "127.1"],
)
async def test_loopback_is_refused_by_default_before_any_request(host: str) -> None:
    with StaticSite({"/page": (200, b"<p>secret</p>")}) as url:
        site = url.rsplit(":", 1)
        target = f"http://{host}:{site[1]}/page"
        with pytest.raises(UrlNotAllowed) as caught:
            await fetch(target, timeout_s=5, max_bytes=1000)
    assert caught.value.code == "url_not_allowed"
    assert caught.value.status == 422
    assert "has no address that may be fetched" in caught.value.detail
    assert "127.0.0.1" not in caught.value.detail or host == "127.0.0.1"  # names stay unmapped
    assert caught.value.extra == {"url": target}


async def test_nothing_reaches_a_refused_server() -> None:
    site = StaticSite({"/page": (200, b"<p>secret</p>")})
    with site as url, pytest.raises(UrlNotAllowed):
        await fetch(f"{url}/page", timeout_s=5, max_bytes=1000)
    assert site.seen == []


async def test_an_allowed_network_is_fetched() -> None:
    with StaticSite({"/page": (200, b"<p>intranet</p>")}) as url:
        fetched = await fetch(
            f"{url}/page",
            timeout_s=5,
            max_bytes=1000,
            allowed_networks=[ipaddress.ip_network("127.0.0.1/32")],
        )
    assert fetched.data == b"<p>intranet</p>"
    assert fetched.final_url == f"{url}/page"


async def test_a_redirect_is_checked_like_the_first_request() -> None:
    inner = StaticSite({"/secret": (200, b"<p>inner</p>")}, host="127.0.0.2")
    with inner as inner_url:
        outer = StaticSite({}, redirects={"/hop": f"{inner_url}/secret"})
        with outer as outer_url:
            with pytest.raises(UrlNotAllowed) as caught:
                await fetch(
                    f"{outer_url}/hop",
                    timeout_s=5,
                    max_bytes=1000,
                    allowed_networks=[ipaddress.ip_network("127.0.0.1/32")],
                )
            assert "127.0.0.2" in caught.value.detail
            assert outer.seen == ["/hop"]
            assert inner.seen == []
            followed = await fetch(
                f"{outer_url}/hop", timeout_s=5, max_bytes=1000, allowed_networks=LOOPBACK
            )
    assert followed.data == b"<p>inner</p>"
    assert followed.final_url == f"{inner_url}/secret"
    assert inner.seen == ["/secret"]


async def test_a_name_that_does_not_resolve_is_answered_as_a_refused_one() -> None:
    """Otherwise the difference would tell a caller which internal names exist."""
    with pytest.raises(UrlNotAllowed) as unresolved:
        await fetch("http://nowhere.invalid/x", timeout_s=5, max_bytes=1000)
    with pytest.raises(UrlNotAllowed) as refused:
        await fetch("http://localhost/x", timeout_s=5, max_bytes=1000)
    assert unresolved.value.code == refused.value.code == "url_not_allowed"
    detail = unresolved.value.detail
    assert detail.replace("nowhere.invalid", "localhost") == refused.value.detail


async def test_the_timeout_bounds_the_whole_fetch_not_each_read() -> None:
    # Each byte comes well within the timeout, the whole body would take 10 s.
    with StaticSite({"/drip": (200, b"x" * 100)}, drip={"/drip": 0.1}) as url:
        started = time.monotonic()
        with pytest.raises(UrlTimeout) as caught:
            await fetch(f"{url}/drip", timeout_s=1, max_bytes=1000, allowed_networks=LOOPBACK)
        assert time.monotonic() - started < 5
    assert caught.value.code == "url_timeout"


@pytest.mark.parametrize(
    "url",
    [
        "http://[::1/",
        "http://a:80:80/",
        "http://0177.0.0.1/",
        "http://ex\U0001f600.com/",
        "http://\uff11\uff12\uff17.0.0.1/",
        "http://a.example/\r\nX-Injected: 1",
        "http://xn--/",  # an A-label IDNA cannot decode
        "http://a.example:99999/",
        "http://a.example:-1/",
        "https://a.example:0/",
        "file:///etc/passwd",
        "http:///x",
        ":abc",
    ],
)
async def test_a_malformed_url_is_invalid_input_before_any_connection(url: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        await fetch(url, timeout_s=5, max_bytes=1000)
    assert caught.value.extra == {"field": "url"}
