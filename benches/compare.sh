#!/usr/bin/env bash
# The same closed-loop scatter-gather through NATS and through matchtracker, side by side.
# Installs nats-server with apt if it is missing, starts it on 127.0.0.1 on a free port,
# runs both, prints the table with the ratio, and stops the server it started.
#   benches/compare.sh [--duration S] [--load KxC]...   (default loads: 10x10 and 100x10)
set -euo pipefail
cd "$(dirname "$0")"

if ! command -v nats-server >/dev/null; then
    apt-get update -qq && apt-get install -y -qq nats-server
fi
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cargo build --release --quiet --manifest-path compare/Cargo.toml
nats-server --addr 127.0.0.1 --port "$port" > /dev/null 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null; wait "$server" 2>/dev/null || true' EXIT
# Wait for the server to accept connections (at most 10 s).
python3 - "$port" <<'PY'
import socket, sys, time
deadline = time.monotonic() + 10
while True:
    try:
        socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=1).close()
        break
    except OSError:
        if time.monotonic() > deadline:
            sys.exit("compare.sh: nats-server did not start")
        time.sleep(0.05)
PY
nats-server --version
./compare/target/release/matchtracker-compare --nats "nats://127.0.0.1:$port" "$@"
