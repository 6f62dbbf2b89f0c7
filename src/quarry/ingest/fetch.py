"""Fetching a document from a URL, bounded in time and size."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath
from urllib.parse import urlsplit

import httpx

from quarry.errors import DocumentTooLarge, InvalidInput, UrlFetchFailed, UrlTimeout

MAX_REDIRECTS = 5


@dataclass(frozen=True)
class Fetched:
    data: bytes
    filename: str
    media_type: str | None
    final_url: str


async def fetch(
    url: str,
    *,
    timeout_s: float,
    max_bytes: int,
    transport: httpx.AsyncBaseTransport | None = None,
) -> Fetched:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise InvalidInput("url must be an absolute http:// or https:// URL", field="url")
    try:
        async with (
            httpx.AsyncClient(
                timeout=timeout_s,
                follow_redirects=True,
                max_redirects=MAX_REDIRECTS,
                transport=transport,
            ) as client,
            client.stream("GET", url) as response,
        ):
            if response.status_code >= 400:
                raise UrlFetchFailed(f"{url} answered HTTP {response.status_code}", url=url)
            declared = response.headers.get("content-length")
            if declared and declared.isdigit() and int(declared) > max_bytes:
                raise DocumentTooLarge(_too_large(url, max_bytes))
            body = bytearray()
            async for piece in response.aiter_bytes():
                body.extend(piece)
                if len(body) > max_bytes:
                    raise DocumentTooLarge(_too_large(url, max_bytes))
            final = str(response.url)
            media_type = response.headers.get("content-type")
    except httpx.TimeoutException:
        raise UrlTimeout(f"{url} did not answer within {timeout_s:g}s", url=url) from None
    except httpx.TooManyRedirects:
        raise UrlFetchFailed(f"{url} redirects more than {MAX_REDIRECTS} times", url=url) from None
    except httpx.HTTPError as exc:
        raise UrlFetchFailed(f"{url} could not be fetched: {exc}", url=url) from None
    name = PurePosixPath(urlsplit(final).path).name or "index.html"
    return Fetched(bytes(body), name, media_type, final)


def _too_large(url: str, max_bytes: int) -> str:
    return f"{url} is larger than the limit of {max_bytes} bytes (QUARRY_MAX_UPLOAD_BYTES)"
