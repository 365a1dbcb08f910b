"""Prometheus exposition of trionos.Metrics: the collector, /metrics on the app's port, the docs."""

from __future__ import annotations

import functools
import subprocess
import sys
from pathlib import Path
from unittest.mock import ANY

import attrs
import trio
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import CollectorRegistry

import trionos
from tests.helpers import ServeFn, http_get
from tests.redis_server import free_port
from tests.test_room_chat_redis import START_TIMEOUT, wait_until_listening
from trionos.testing import expect_message

sys.path.insert(0, str(Path(__file__).parents[1] / "examples"))
from room_chat import make_handler, make_hub

ROOT = Path(__file__).parents[1]
SCRIPT = ROOT / "examples" / "room_chat.py"


def parse(body: bytes) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """Sample name -> {labels: value}, read with prometheus_client's own parser."""
    samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def split_response(response: bytes) -> tuple[bytes, bytes]:
    head, _, body = response.partition(b"\r\n\r\n")
    return head, body


def test_every_metrics_field_is_exported_with_its_type_and_labels() -> None:
    """Each Metrics field becomes one family: *_open fields are gauges, dicts are labelled counters."""
    metrics = trionos.Metrics(connections_open=3, messages_out=7)
    metrics.refused("capacity")
    metrics.closed(1001)
    metrics.closed(1001)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(trionos.MetricsCollector(metrics))
    families = {family.name: family for family in registry.collect()}
    assert set(families) == {f"trionos_{field.name}" for field in attrs.fields(trionos.Metrics)}
    assert families["trionos_connections_open"].type == "gauge"
    assert families["trionos_messages_out"].type == "counter"
    assert registry.get_sample_value("trionos_connections_open") == 3
    assert registry.get_sample_value("trionos_messages_out_total") == 7
    assert registry.get_sample_value("trionos_connections_refused_total", {"reason": "capacity"}) == 1
    assert registry.get_sample_value("trionos_websockets_closed_total", {"code": "1001"}) == 2


def test_the_collector_reads_the_metrics_at_scrape_time() -> None:
    """Counting after registration shows in the next scrape: nothing is copied in advance."""
    metrics = trionos.Metrics()
    registry = CollectorRegistry(auto_describe=False)
    registry.register(trionos.MetricsCollector(metrics, prefix="chat"))
    assert registry.get_sample_value("chat_rate_limited_total") == 0
    metrics.rate_limited += 5
    assert registry.get_sample_value("chat_rate_limited_total") == 5


def test_docs_describe_every_metric() -> None:
    """docs/metrics.md names every exported metric (a new Metrics field needs its line there)."""
    text = (ROOT / "docs" / "metrics.md").read_text()
    missing = []
    for family in trionos.MetricsCollector(trionos.Metrics()).collect():
        name = family.name + ("_total" if family.type == "counter" else "")
        if f"`{name}`" not in text:
            missing.append(name)
    assert not missing, f"docs/metrics.md does not describe {missing}"
    assert "metrics.md" in (ROOT / "docs" / "index.md").read_text()


async def test_metrics_are_served_on_the_app_port_and_count_the_hub(start_server: ServeFn) -> None:
    """Over a real server: after two members chat, GET /metrics answers 200 in the Prometheus
    text format, and prometheus_client's parser reads the hub's counters from it."""
    hub = make_hub(history=None, rate_limit=trionos.RateLimit(rate=1.0, burst=3, close_after=50))
    async with hub:
        server = await start_server(make_handler(hub, metrics=True))
        async with trionos.connect(server.url) as ann, trionos.connect(server.url) as bob:
            await ann.send_json({"type": "join", "username": "ann"})
            await expect_message(ann, {"type": "welcome", "users": ["ann"]})
            await bob.send_json({"type": "join", "username": "bob"})
            await expect_message(bob, {"type": "welcome", "users": ["ann", "bob"]})
            await expect_message(ann, {"type": "joined", "username": "bob"})
            for text in ("one", "two", "three"):
                await bob.send_json({"type": "chat", "text": text})
            await expect_message(ann, {"type": "message", "from": "bob", "text": "one", "time": ANY})
            await expect_message(ann, {"type": "message", "from": "bob", "text": "two", "time": ANY})
            await expect_message(bob, {"type": "error", "reason": "too many messages: slow down"})
            head, body = split_response(await http_get(server.port, "/metrics"))
    assert head.startswith(b"HTTP/1.1 200")
    assert b"content-type: text/plain; version=" in head.lower()
    samples = parse(body)
    # Broadcasts: "joined" to ann, two messages to ann (the third was refused).
    assert samples["trionos_messages_out_total"][()] == 3
    assert samples["trionos_bytes_out_total"][()] > 0
    assert samples["trionos_rate_limited_total"][()] == 1
    assert samples["trionos_slow_client_disconnects_total"][()] == 0


async def test_room_chat_metrics_flag_serves_metrics(tmp_path: Path) -> None:
    """`examples/room_chat.py --metrics` answers GET /metrics with the Prometheus text format."""
    port = free_port()
    log = tmp_path / "room_chat.log"
    args = [sys.executable, str(SCRIPT), "--host", "127.0.0.1", "--port", str(port), "--metrics"]
    with log.open("wb") as output:
        async with trio.open_nursery() as nursery:
            run = functools.partial(
                trio.run_process, args, stdout=output, stderr=subprocess.STDOUT, check=False
            )
            process: trio.Process = await nursery.start(run)
            try:
                await wait_until_listening(process, port, log)
                with trio.fail_after(START_TIMEOUT):
                    head, body = split_response(await http_get(port, "/metrics"))
            finally:
                process.terminate()
    assert head.startswith(b"HTTP/1.1 200"), log.read_text()
    assert parse(body)["trionos_messages_out_total"][()] == 0
