"""What permessage-deflate costs per message without context takeover, by window size.

Run ``python bench/bench_deflate.py``. trionos negotiates ``server_no_context_takeover`` and
``client_no_context_takeover`` (so a broadcast is compressed once for every recipient and an idle
connection holds no zlib state), which makes every message start a fresh compressor: this prints,
for each ``server_max_window_bits`` and ``memLevel``, the CPU per message (compress, and
decompress as a client does) and the compressed size, for a small chat message and a 4 KiB JSON
document. No sockets.
"""

from __future__ import annotations

import json
import time

from websockets.extensions.permessage_deflate import PerMessageDeflate
from websockets.frames import Frame, Opcode

SMALL = json.dumps({"type": "message", "from": "ann", "room": "lobby", "text": "hello there, how are you?"})
LARGE = json.dumps(
    {"type": "state", "users": [{"name": f"user{i}", "status": "online", "score": i * 7} for i in range(80)]}
)


def per_message(bits: int, mem_level: int, text: str, rounds: int = 3000) -> tuple[float, float, int]:
    settings = {"memLevel": mem_level}
    encoder = PerMessageDeflate(True, True, 15, bits, settings)
    decoder = PerMessageDeflate(True, True, bits, 15)
    frame = Frame(Opcode.TEXT, text.encode())
    start = time.perf_counter()
    for _ in range(rounds):
        encoded = encoder.encode(frame)
    compress = (time.perf_counter() - start) / rounds * 1e6
    start = time.perf_counter()
    for _ in range(rounds):
        decoder.decode(encoded, max_size=1 << 20)
    decompress = (time.perf_counter() - start) / rounds * 1e6
    return compress, decompress, len(encoded.data)


def main() -> None:
    for name, text in (("chat message", SMALL), ("4 KiB JSON", LARGE)):
        print(f"{name}: {len(text.encode())} bytes")
        for bits, mem_level in ((9, 1), (10, 4), (12, 5), (12, 8), (15, 8)):
            compress, decompress, size = per_message(bits, mem_level, text)
            print(
                f"  window_bits={bits:2d} memLevel={mem_level}: compress {compress:6.1f} us, "
                f"decompress {decompress:5.1f} us, {size} bytes"
            )


if __name__ == "__main__":
    main()
