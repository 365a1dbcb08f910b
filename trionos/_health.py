"""Health checks for load balancers and orchestrators (the runner's ``--health PATH``).

Two endpoints under *PATH*, answered before the app sees the request:

* ``PATH/live`` (liveness): 200 ``ok`` while the process serves. A process that stopped answering
  it is stuck and may be restarted.
* ``PATH/ready`` (readiness): 200 ``ready`` when the app can take new users; 503 while the app
  says it cannot (:class:`~trionos.SupportsReadiness`, e.g. its broker is unreachable) or once a
  drain was asked for. A load balancer stops sending new users there first.

A draining process stops accepting at once (with workers, the others take its new connections),
so after a drain began these endpoints are not answered by that process at all.
"""

from __future__ import annotations

from collections.abc import Callable

from ._server import Handler, Request

__all__ = ["health_handler"]


def health_handler(path: str, handler: Handler, ready: Callable[[], bool]) -> Handler:
    """*handler*, with the liveness and readiness endpoints under *path* in front of it.

    Args:
        path: the prefix, e.g. ``"/health"`` for ``/health/live`` and ``/health/ready``.
        handler: the app's handler, which gets every other request.
        ready: says whether the process can take new users (the app's readiness and not draining).
    """
    prefix = "/" + path.strip("/")
    live, readiness = f"{prefix}/live", f"{prefix}/ready"

    async def with_health(req: Request) -> None:
        if not req.is_upgrade and req.method in ("GET", "HEAD"):
            if req.path == live:
                await req.respond_text("ok\n")
                return
            if req.path == readiness:
                if ready():
                    await req.respond_text("ready\n")
                else:
                    await req.respond_text("not ready\n", status=503)
                return
        await handler(req)

    return with_health
