"""How much does the typed codec cost over hand-written JSON handling?

Run ``python bench/bench_codec.py [--rounds N] [--loops N]``. For every message of the chat protocol
it times encode+decode with ``trionos.chat``'s codecs and with a hand-written baseline (a dict built
by hand, ``json.dumps``, ``json.loads``, dispatch on ``"type"``, construct the same attrs object),
alternating them in each round so that drift in the machine affects both alike. It prints the
median microseconds per message and the ratio codec / baseline (target: at most 2.0). When orjson
is installed it also times ``Codec(..., json="orjson")``.

The baseline is the fast path a careful person would write: ``json.dumps`` with default options (it
reuses one cached encoder) and no validation at all. The codec also checks every field's type and
produces compact JSON; that is what the ratio pays for.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

# Benchmark the working tree, installed or not.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from trionos._codec import Codec
from trionos.chat import (
    Chat,
    ClientMessage,
    Error,
    Join,
    Joined,
    Leave,
    Left,
    Message,
    ServerMessage,
    Welcome,
)

SAMPLES: list[Any] = [
    Join("ann", room="kitchen"),
    Chat("hello, world: this is a chat line of ordinary length"),
    Leave(),
    Welcome(("ann", "bob", "cy", "dee", "ed")),
    Joined("bob"),
    Message("ann", "hello, world: this is a chat line of ordinary length"),
    Left("bob"),
    Error("join a room first"),
]

# -- the hand-written baseline --------------------------------------------------------------------------

TO_DICT: dict[type, Callable[[Any], dict[str, Any]]] = {
    Join: lambda m: {"type": "join", "username": m.username, "room": m.room},
    Chat: lambda m: {"type": "chat", "text": m.text},
    Leave: lambda m: {"type": "leave"},
    Welcome: lambda m: {"type": "welcome", "users": list(m.users)},
    Joined: lambda m: {"type": "joined", "username": m.username},
    Message: lambda m: {"type": "message", "from": m.from_, "text": m.text},
    Left: lambda m: {"type": "left", "username": m.username},
    Error: lambda m: {"type": "error", "reason": m.reason},
}

FROM_DICT: dict[str, Callable[[dict[str, Any]], Any]] = {
    "join": lambda d: Join(d["username"], d.get("room", "lobby")),
    "chat": lambda d: Chat(d["text"]),
    "leave": lambda d: Leave(),
    "welcome": lambda d: Welcome(tuple(d["users"])),
    "joined": lambda d: Joined(d["username"]),
    "message": lambda d: Message(d["from"], d["text"]),
    "left": lambda d: Left(d["username"]),
    "error": lambda d: Error(d["reason"]),
}


def baseline_round_trip(msg: Any) -> Any:
    data = json.dumps(TO_DICT[type(msg)](msg))
    obj = json.loads(data)
    return FROM_DICT[obj["type"]](obj)


def codec_round_trip(json_library: str) -> Callable[[Any], Callable[[Any], Any]]:
    """For each message, a function that encodes and decodes it with the chat codec that owns it."""
    client = Codec(ClientMessage, json=json_library)
    server = Codec(ServerMessage, json=json_library)
    client_classes = set(client.tags.values())

    def for_message(msg: Any) -> Callable[[Any], Any]:
        codec = client if type(msg) in client_classes else server
        encode, decode = codec.encode, codec.decode
        return lambda m: decode(encode(m))

    return for_message


# -- timing ---------------------------------------------------------------------------------------------


def time_per_call(fn: Callable[[Any], Any], arg: Any, loops: int) -> float:
    """Microseconds per call of fn(arg), over ``loops`` calls."""
    start = time.perf_counter()
    for _ in range(loops):
        fn(arg)
    return (time.perf_counter() - start) / loops * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15, help="alternating rounds (median taken)")
    parser.add_argument("--loops", type=int, default=3000, help="calls per message per round")
    args = parser.parse_args()

    implementations: dict[str, Callable[[Any], Callable[[Any], Any]]] = {
        "baseline": lambda msg: baseline_round_trip,
        "codec": codec_round_trip("stdlib"),
    }
    if importlib.util.find_spec("orjson") is not None:
        implementations["orjson"] = codec_round_trip("orjson")
    # Check that every implementation gives back the message it was given before timing anything.
    for msg in SAMPLES:
        for name, make in implementations.items():
            got = make(msg)(msg)
            assert got == msg, (name, msg, got)

    results: dict[tuple[str, str], list[float]] = {}
    for round_no in range(args.rounds):
        # Alternate the order so that neither side always runs on a warmer (or hotter) machine.
        order = list(implementations) if round_no % 2 == 0 else list(reversed(implementations))
        for msg in SAMPLES:
            for name in order:
                fn = implementations[name](msg)
                results.setdefault((type(msg).__name__, name), []).append(time_per_call(fn, msg, args.loops))

    others = [name for name in implementations if name != "baseline"]
    print(f"encode+decode, µs per message (median of {args.rounds} rounds x {args.loops} calls)")
    print(f"python {sys.version.split()[0]}; ratio = codec / baseline, target <= 2.0")
    print(f"{'message':<10} {'baseline':>9}" + "".join(f" {name:>8} {'ratio':>6}" for name in others))
    totals = dict.fromkeys(implementations, 0.0)
    for msg in SAMPLES:
        label = type(msg).__name__
        medians = {name: statistics.median(results[(label, name)]) for name in implementations}
        for name, value in medians.items():
            totals[name] += value
        row = "".join(f" {medians[n]:8.2f} {medians[n] / medians['baseline']:6.2f}" for n in others)
        print(f"{label:<10} {medians['baseline']:9.2f}{row}")
    n = len(SAMPLES)
    row = "".join(f" {totals[o] / n:8.2f} {totals[o] / totals['baseline']:6.2f}" for o in others)
    print(f"{'mean':<10} {totals['baseline'] / n:9.2f}{row}")


if __name__ == "__main__":
    main()
