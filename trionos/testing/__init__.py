"""Test kit for applications built on trionos: in-memory connections, fixtures, strategies."""

from ._memory import MemoryServer as MemoryServer
from ._memory import open_memory_server as open_memory_server

__all__ = ["MemoryServer", "open_memory_server"]
