"""RawPeer: the hand-driven WebSocket peer the fault injectors are made of."""

from __future__ import annotations

import pytest

import trionos
from tests.testing.apps import NO_HEARTBEAT
from trionos.testing import open_memory_server, open_raw_peer


async def test_raw_peer_is_rejected_like_a_client() -> None:
    """open_raw_peer raises ConnectionRejected with the server's status and body."""

    async def refuse(req: trionos.Request) -> None:
        await req.reject(403, "go away")

    async with open_memory_server(refuse, **NO_HEARTBEAT) as memory:
        with pytest.raises(trionos.ConnectionRejected) as info:
            async with open_raw_peer(memory):
                pass
    assert (info.value.status_code, info.value.body) == (403, b"go away")
