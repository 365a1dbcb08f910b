#!/usr/bin/env bash
# `make autobahn`: Autobahn|Testsuite against bench/autobahn_server.py, compression off, on, and
# on with context takeover, every case (9.* included; 12.*/13.* when compression is on). Not part
# of `make test`. MODES picks some of them (default "off deflate takeover").
# Env: PYTHON (the venv's python), WSTEST_DIR (a cache dir for wstest), OUT (reports),
#      HARNESS (the shared harness dir), CASES (default all), TIMEOUT (default 3600 s: 12.* is slow).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
PYTHON=${PYTHON:-python3}
HARNESS=${HARNESS:-$here/../../shared/autobahn}
WSTEST_DIR=${WSTEST_DIR:-${TMPDIR:-/tmp}/wstest}
OUT=${OUT:-${TMPDIR:-/tmp}/trionos-autobahn}
if [[ ! -x $WSTEST_DIR/venv/bin/wstest ]]; then
  "$HARNESS/setup_wstest.sh" "$WSTEST_DIR"
fi
status=0
for mode in ${MODES:-off deflate takeover}; do
  port_file=$(mktemp)
  case $mode in
    off) flags=() ;;
    deflate) flags=(--compression deflate) ;;
    takeover) flags=(--compression deflate --context-takeover) ;;
    *) echo "unknown mode $mode" >&2; exit 2 ;;
  esac
  "$PYTHON" "$here/autobahn_server.py" --port 0 "${flags[@]}" > "$port_file" &
  server=$!
  for _ in $(seq 100); do grep -q READY "$port_file" && break; sleep 0.1; done
  port=$(awk '/READY/ {print $2}' "$port_file")
  echo "=== compression $mode: trionos on port $port"
  WSTEST="$WSTEST_DIR/venv/bin/wstest" PYTHON="$PYTHON" EXCLUDE="" DURATIONS=1 CASES="${CASES:-*}" \
    TIMEOUT="${TIMEOUT:-3600}" \
    DEFLATE=$([[ $mode == off ]] && echo 0 || echo 1) AGENT="trionos-$mode" \
    "$HARNESS/run_autobahn.sh" "ws://127.0.0.1:$port/" "$OUT/$mode" || status=1
  kill "$server"; wait "$server" 2>/dev/null || true
  rm -f "$port_file"
done
exit $status
