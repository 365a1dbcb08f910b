"""``examples/token_chat.py`` as a real process: a token issued on the command line opens the chat."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import trio

import trionos
from tests.redis_server import free_port
from trionos.testing import expect_message

pytest.importorskip("itsdangerous", reason="`make test` installs the auth extra")

SCRIPT = Path(__file__).parents[1] / "examples" / "token_chat.py"
SECRET = ["--secret", "s3cret"]


def run_script(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=60)


def test_issue_prints_a_token_and_a_missing_secret_is_a_usage_error() -> None:
    """--issue prints one URL-safe token; without --secret (or TOKEN_CHAT_SECRET) the script exits with 2."""
    issued = run_script(*SECRET, "--issue", "ann", "--rooms", "lobby,dev")
    assert issued.returncode == 0, issued.stderr
    token = issued.stdout.strip()
    assert token and "\n" not in token and " " not in token
    missing = run_script("--issue", "ann")
    assert missing.returncode == 2
    assert "--secret (or TOKEN_CHAT_SECRET) is required" in missing.stderr


def test_the_command_refuses_to_serve_the_module_app_without_a_secret() -> None:
    """``trionos examples.token_chat:app`` without TOKEN_CHAT_SECRET exits with 1 and says what is missing."""
    env = {key: value for key, value in os.environ.items() if key != "TOKEN_CHAT_SECRET"}
    done = subprocess.run(
        [sys.executable, "-m", "trionos", "examples.token_chat:app", "--port", "0"],
        capture_output=True, text=True, timeout=60, cwd=SCRIPT.parents[1], env=env,
    )  # fmt: skip
    assert done.returncode == 1
    assert "needs its signing key in TOKEN_CHAT_SECRET" in done.stderr


async def test_the_served_chat_takes_a_token_from_the_command_line(tmp_path: Path) -> None:
    """The server refuses no token with 401 and lets the issued one join its rooms; SIGTERM stops it."""
    token = run_script(*SECRET, "--issue", "ann", "--rooms", "lobby").stdout.strip()
    port = free_port()
    log = tmp_path / "token_chat.log"
    with log.open("wb") as output:
        command = [sys.executable, str(SCRIPT), *SECRET, "--port", str(port)]
        process = await trio.lowlevel.open_process(command, stdout=output, stderr=subprocess.STDOUT)
        try:
            with trio.fail_after(20):
                while True:
                    assert process.returncode is None, log.read_text()
                    try:
                        await (await trio.open_tcp_stream("127.0.0.1", port)).aclose()
                        break
                    except OSError:
                        await trio.sleep(0.05)
            url = f"ws://127.0.0.1:{port}/"
            with pytest.raises(trionos.ConnectionRejected) as refused:
                async with trionos.connect(url):
                    pass  # pragma: no cover (refused)
            assert refused.value.status_code == 401
            async with trionos.connect(url, extra_headers=[("Authorization", f"Bearer {token}")]) as ann:
                await ann.send_json({"type": "join", "room": "lobby"})
                await expect_message(ann, {"type": "welcome", "room": "lobby", "users": ["ann"]}, timeout=5)
        finally:
            process.send_signal(signal.SIGTERM)
            with trio.fail_after(20):
                assert await process.wait() == 0, log.read_text()
