"""The one bearer-token check, for REST and ``/ws`` alike.

With ``settings.token`` set, a request carries it as ``Authorization: Bearer <token>`` or, for
a browser's WebSocket (which cannot set headers), as ``?token=``. Compared in constant time.
"""

from __future__ import annotations

import hmac

from starlette.requests import HTTPConnection


def authorized(conn: HTTPConnection, token: str | None) -> bool:
    """Whether ``conn`` (a request or a WebSocket) may go on: no token configured, or its."""
    if token is None:
        return True
    given = conn.headers.get("authorization", "").removeprefix("Bearer ").strip()
    given = given or conn.query_params.get("token", "")
    return hmac.compare_digest(given.encode(), token.encode())
