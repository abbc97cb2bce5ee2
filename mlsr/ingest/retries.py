"""When to ask a web server again, shared by the picture fetcher and the MediaWiki client: a Retry-After header
read with a cap, and which failures no retry helps (a refusal other than 429 / 5xx, a name that does not
resolve, nothing listening)."""

from __future__ import annotations

import socket
import urllib.error


def retry_after(header: str | None, default: float, cap: float) -> float:
    """Seconds from a Retry-After header (a number of seconds), at most `cap`; `default` when absent or a date."""
    try:
        return min(max(float(header), 0.0), cap) if header is not None else default
    except ValueError:
        return default


def failed(error: OSError, wait: float, cap: float) -> tuple[str, float | None]:
    """Why a request failed, and the seconds to wait before asking again (None: asking again cannot help)."""
    if isinstance(error, urllib.error.HTTPError):
        if error.code != 429 and error.code < 500:
            return f"HTTP {error.code}", None
        return f"HTTP {error.code}", retry_after(error.headers.get("Retry-After"), wait, cap)
    cause = getattr(error, "reason", error)
    # the name does not resolve, or nothing listens (a proxy that is down): no retry helps
    return str(cause), None if isinstance(cause, (socket.gaierror, ConnectionRefusedError)) else wait
