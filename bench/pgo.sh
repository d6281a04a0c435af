#!/usr/bin/env bash
# bench/pgo.sh: regenerate cmd/wsproxy/default.pgo, the CPU profile that
# `go build` and `go run` of ./cmd/wsproxy use for profile-guided
# optimisation (-pgo=auto picks a default.pgo in the main package).
#
# It builds wsproxy without PGO, runs it with a production-like config
# (warn logging, 1% access log, one ws:// and one wss:// site) in front of
# two echo backends, and profiles it through the admin API over three
# bounded loads in a row: 9 s of ws:// handshakes (16 workers), 9 s of
# 64 B echo on 100 connections, 9 s of wss:// handshakes. Everything
# listens on 127.0.0.1 and is stopped by PID. Run it after changes that
# move the hot paths; commit the new profile with the change.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
WORK=$(mktemp -d /tmp/wsproxy-pgo.XXXXXX)
PIDS=()
cleanup() {
	local p
	for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
	for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap cleanup EXIT

. "$ROOT/bench/lib.sh" # free_port, wait_listen
must_listen() { # PORT PID
	wait_listen "$1" "$2" || { echo "pgo.sh: nothing listens on $1" >&2; return 1; }
}

echo "== building (wsproxy without PGO), work dir $WORK"
go build -pgo=off -o "$WORK/wsproxy" ./cmd/wsproxy
go build -o "$WORK/wsbench" ./bench/wsbench
go build -o "$WORK/echo" ./examples/echo
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
	-subj "/CN=127.0.0.1" -addext "subjectAltName=IP:127.0.0.1" \
	-keyout "$WORK/key.pem" -out "$WORK/cert.pem" >/dev/null 2>&1

B1=$(free_port) B2=$(free_port) WS=$(free_port) WSS=$(free_port) ADMIN=$(free_port)
"$WORK/echo" -listen "127.0.0.1:$B1" -id echo-1 >"$WORK/echo-1.log" 2>&1 &
E1=$!
PIDS+=($E1)
"$WORK/echo" -listen "127.0.0.1:$B2" -id echo-2 >"$WORK/echo-2.log" 2>&1 &
E2=$!
PIDS+=($E2)
cat >"$WORK/Caddyfile" <<EOF
{
	log_level warn
	admin 127.0.0.1:$ADMIN
	access_log $WORK/access.log 0.01
}
127.0.0.1:$WS {
	route /ws {
		query room
		to 127.0.0.1:$B1 127.0.0.1:$B2
		lb_policy hash query:room
	}
}
https://127.0.0.1:$WSS {
	tls $WORK/cert.pem $WORK/key.pem
	route /ws {
		query room
		to 127.0.0.1:$B1 127.0.0.1:$B2
		lb_policy hash query:room
	}
}
EOF
must_listen "$B1" "$E1"
must_listen "$B2" "$E2"
"$WORK/wsproxy" run -config "$WORK/Caddyfile" >"$WORK/wsproxy.log" 2>&1 &
P=$!
PIDS+=($P)
must_listen "$WS" "$P"
must_listen "$WSS" "$P"
must_listen "$ADMIN" "$P"

echo "== profiling 27 s of load"
curl -sf -o "$WORK/default.pgo" "http://127.0.0.1:$ADMIN/debug/pprof/profile?seconds=27" &
CURL=$!
sleep 0.2
"$WORK/wsbench" -mode handshakes -url "ws://127.0.0.1:$WS/ws?room={i}" -workers 16 -duration 9s -warmup 0s
"$WORK/wsbench" -mode echo -url "ws://127.0.0.1:$WS/ws?room={i}" -conns 100 -duration 9s -warmup 0s -src 127.0.0.2-127.0.0.254
"$WORK/wsbench" -mode handshakes -insecure -url "wss://127.0.0.1:$WSS/ws?room={i}" -workers 16 -duration 9s -warmup 0s
wait "$CURL"
cleanup
PIDS=()
cp "$WORK/default.pgo" "$ROOT/cmd/wsproxy/default.pgo"
echo "== wrote cmd/wsproxy/default.pgo ($(wc -c <"$ROOT/cmd/wsproxy/default.pgo") bytes)"
rm -rf "$WORK"
