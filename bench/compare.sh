#!/usr/bin/env bash
# Side-by-side benchmark: the direct path, wsproxy, HAProxy, nginx and Caddy
# in front of the same two echo backends on loopback, each driven by
# bench/wsbench, then a Markdown table and an SVG chart in bench/results/.
#
#   bench/compare.sh           full run (about 5 minutes): latest.{md,svg,jsonl}
#   bench/compare.sh -quick    smoke run (about 1 minute): quick.{md,svg,jsonl}
#
# Runs as root (it installs haproxy, nginx and caddy from Debian's packages
# if they are missing). Every process it starts listens on 127.0.0.1 only,
# is tracked by PID and stopped by PID; no systemd. A peer that cannot be
# installed or started is reported as such in the table, and the run goes on.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

QUICK=0
for arg in "$@"; do
	case $arg in
	-quick | --quick) QUICK=1 ;;
	-h | --help) sed -n '2,12p' "$0"; exit 0 ;;
	*) echo "compare.sh: unknown argument $arg (want -quick)" >&2; exit 2 ;;
	esac
done
COMMAND="bench/compare.sh${*:+ $*}"

# The machines cap a process at 20,000 open files; ask for all of it.
ulimit -n 20000 2>/dev/null || ulimit -n "$(ulimit -Hn)"
FDS=$(ulimit -n)

if [ "$QUICK" = 1 ]; then
	HOLD=300 HOLD_DIRECT=300 SETTLE=1s DUR=2s WARM=300ms RATE_DUR=2s HS_DUR=1s PAUSE=0.2
	OUTNAME=quick
else
	# 9,000 held connections: a proxy needs two descriptors for each, so
	# 18,000 plus listeners and logs fits under the 20,000 cap. The direct
	# path has no proxy RSS to measure; fewer connections suffice there.
	HOLD=9000 HOLD_DIRECT=2000 SETTLE=5s DUR=10s WARM=1s RATE_DUR=10s HS_DUR=5s PAUSE=1
	OUTNAME=latest
fi
ECHO_CONNS=100
RATE=100 # per connection: 100 connections x 100/s = 10,000 msg/s
HS_WORKERS=16
SRC=127.0.0.2-127.0.0.254

OUT=$ROOT/bench/results
mkdir -p "$OUT"
WORK=$(mktemp -d /tmp/wsbench-compare.XXXXXX)
BIN=$WORK/bin
LOGS=$WORK/logs
RUNS=$WORK/runs.jsonl
mkdir -p "$BIN" "$LOGS"
: >"$RUNS"
echo "compare.sh: work dir $WORK (configs, logs), fd limit $FDS"

STARTED=() # every PID this script started and has not stopped yet

stop_pid() { # PID: TERM, up to 10 s, then KILL
	local pid=$1 i
	kill -TERM "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null; return 0; }
	for i in $(seq 100); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	kill -KILL "$pid" 2>/dev/null
	wait "$pid" 2>/dev/null
	local keep=() p
	for p in "${STARTED[@]}"; do [ "$p" != "$pid" ] && keep+=("$p"); done
	STARTED=("${keep[@]}")
	return 0
}

cleanup() {
	local p
	for p in "${STARTED[@]}"; do stop_pid "$p"; done
}
trap cleanup EXIT
trap 'echo "compare.sh: interrupted" >&2; exit 130' INT TERM

json_escape() { # text -> JSON string body
	local s=$1
	s=${s//\\/\\\\}
	s=${s//\"/\\\"}
	s=${s//$'\n'/ }
	s=${s//$'\t'/ }
	s=${s//$'\r'/ }
	printf '%s' "$s"
}
note() { printf '{"label":"%s/note","note":"%s"}\n' "$1" "$(json_escape "$2")" >>"$RUNS"; echo "  note: $2"; }
version() { printf '{"label":"%s/version","note":"%s"}\n' "$1" "$(json_escape "$2")" >>"$RUNS"; }
not_run() { printf '{"label":"%s/status","error":"%s"}\n' "$1" "$(json_escape "$2")" >>"$RUNS"; echo "  $1: not run: $2"; }

free_port() {
	local p
	while :; do
		p=$((20000 + RANDOM % 10000))
		[ -z "$(ss -Hltn "sport = :$p" 2>/dev/null)" ] && { echo "$p"; return; }
	done
}

wait_listen() { # PORT PID: until something listens on PORT, the process dies, or 15 s pass
	local i
	for i in $(seq 150); do
		[ -n "$(ss -Hltn "sport = :$1" 2>/dev/null)" ] && return 0
		kill -0 "$2" 2>/dev/null || return 1
		sleep 0.1
	done
	return 1
}

# ---- peers from Debian ----------------------------------------------------
declare -A HAVE
missing=()
for p in haproxy nginx caddy; do
	if command -v "$p" >/dev/null; then HAVE[$p]=1; else missing+=("$p"); fi
done
if [ ${#missing[@]} -gt 0 ]; then
	echo "== installing ${missing[*]} from Debian"
	export DEBIAN_FRONTEND=noninteractive
	# The packages' maintainer scripts try to start system services; there is
	# no init here and we start our own instances, so tell them not to.
	policy=/usr/sbin/policy-rc.d
	made_policy=0
	if [ ! -e "$policy" ]; then
		printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && made_policy=1
	fi
	apt-get update -q >"$LOGS/apt.log" 2>&1
	for p in "${missing[@]}"; do
		if apt-get install -y -q "$p" >>"$LOGS/apt.log" 2>&1 && command -v "$p" >/dev/null; then
			HAVE[$p]=1
		fi
	done
	[ "$made_policy" = 1 ] && rm -f "$policy"
fi
# Stop any instance a package's install may have started anyway: only
# processes whose PID file the package wrote, by that PID.
for pf in /run/haproxy.pid /run/nginx.pid; do
	[ -s "$pf" ] && kill -TERM "$(cat "$pf")" 2>/dev/null
done

# ---- builds ------------------------------------------------------------
echo "== building wsbench, report, echo, wsproxy"
go build -o "$BIN/wsbench" ./bench/wsbench || { echo "compare.sh: cannot build bench/wsbench" >&2; exit 1; }
go build -o "$BIN/report" ./bench/report || { echo "compare.sh: cannot build bench/report" >&2; exit 1; }
go build -o "$BIN/echo" ./examples/echo || { echo "compare.sh: cannot build examples/echo" >&2; exit 1; }
# wsproxy from the work tree; if that does not build (someone is mid-edit),
# from the last commit, exported with git archive (the repo is not touched).
WSPROXY_BUILD_ERR="" WSPROXY_SRC="work tree"
if ! go build -o "$BIN/wsproxy" ./cmd/wsproxy 2>"$LOGS/wsproxy-build.log"; then
	WSPROXY_SRC="HEAD $(git rev-parse --short HEAD 2>/dev/null) (the work tree did not build: $(head -2 "$LOGS/wsproxy-build.log" | tr '\n' ' '))"
	mkdir -p "$WORK/head"
	if ! { git archive HEAD | tar -x -C "$WORK/head"; } 2>>"$LOGS/wsproxy-build.log" ||
		! (cd "$WORK/head" && go build -o "$BIN/wsproxy" ./cmd/wsproxy) 2>>"$LOGS/wsproxy-build.log"; then
		WSPROXY_BUILD_ERR="go build ./cmd/wsproxy failed in the work tree and at HEAD: $(tail -2 "$LOGS/wsproxy-build.log" | tr '\n' ' ')"
	fi
fi

# A self-signed ECDSA P-256 certificate for 127.0.0.1, for wss://.
CERT=$WORK/cert.pem KEY=$WORK/key.pem PEM=$WORK/combined.pem
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
	-subj "/CN=127.0.0.1" -addext "subjectAltName=IP:127.0.0.1" \
	-keyout "$KEY" -out "$CERT" >"$LOGS/openssl.log" 2>&1 || echo "compare.sh: openssl failed; wss runs will fail" >&2
cat "$CERT" "$KEY" >"$PEM" 2>/dev/null
chmod 644 "$KEY" "$PEM" # nginx's workers run as nobody; loopback-only throwaway key

# ---- backends ----------------------------------------------------------
B1="" B2="" BPIDS=()
start_backends() {
	B1=$(free_port)
	B2=$(free_port)
	while [ "$B2" = "$B1" ]; do B2=$(free_port); done
	"$BIN/echo" -listen "127.0.0.1:$B1" -id echo-1 >>"$LOGS/echo-1.log" 2>&1 &
	BPIDS=($!)
	STARTED+=($!)
	"$BIN/echo" -listen "127.0.0.1:$B2" -id echo-2 >>"$LOGS/echo-2.log" 2>&1 &
	BPIDS+=($!)
	STARTED+=($!)
	wait_listen "$B1" "${BPIDS[0]}" && wait_listen "$B2" "${BPIDS[1]}"
}
stop_backends() {
	local p
	for p in "${BPIDS[@]}"; do stop_pid "$p"; done
	BPIDS=()
}

# ---- one target ----------------------------------------------------------
wsb() { # TARGET RUN wsbench-args...
	local t=$1 r=$2 out rc
	shift 2
	out=$("$BIN/wsbench" -json -label "$t/$r" "$@" 2>"$LOGS/$t.$r.txt")
	rc=$?
	sed 's/^/    /' "$LOGS/$t.$r.txt"
	if [ -n "$out" ]; then
		echo "$out" >>"$RUNS"
	else
		note "$t" "$r: wsbench exited $rc without a result: $(tail -1 "$LOGS/$t.$r.txt")"
	fi
	sleep "$PAUSE" # let the last connections' closes finish
}

# suite TARGET PID WS_URL WSS_URL HOLD_COUNT
suite() {
	local t=$1 pid=$2 url=$3 wss=$4 hold=$5
	# The backends' CPU is sampled too, so that what other processes on the
	# machine used during each window can be reported.
	local bp
	bp=$(IFS=,; echo "${BPIDS[*]}")
	wsb "$t" hold -mode hold -url "$url" -conns "$hold" -src "$SRC" -settle "$SETTLE" -pid "$pid"
	wsb "$t" echo64 -mode echo -url "$url" -conns "$ECHO_CONNS" -size 64 -duration "$DUR" -warmup "$WARM" -pid "$pid" -backend-pid "$bp"
	wsb "$t" echo4k -mode echo -url "$url" -conns "$ECHO_CONNS" -size 4096 -duration "$DUR" -warmup "$WARM" -pid "$pid" -backend-pid "$bp"
	wsb "$t" rate -mode rate -url "$url" -conns "$ECHO_CONNS" -rate "$RATE" -size 64 -duration "$RATE_DUR" -warmup "$WARM" -pid "$pid" -backend-pid "$bp"
	wsb "$t" hs_ws -mode handshakes -url "$url" -workers "$HS_WORKERS" -duration "$HS_DUR" -warmup "$WARM" -src "$SRC" -pid "$pid" -backend-pid "$bp"
	if [ -n "$wss" ]; then
		wsb "$t" hs_wss -mode handshakes -url "$wss" -insecure -workers "$HS_WORKERS" -duration "$HS_DUR" -warmup "$WARM" -src "$SRC" -pid "$pid" -backend-pid "$bp"
	fi
}

# Each start_X writes X's config into $WORK/X/, starts it in the foreground
# (as a background job of this script) and sets PID, URL and WSS.
PID="" URL="" WSS=""

start_wsproxy() {
	local dir=$WORK/wsproxy p ps policy="lb_policy hash query:room" err
	mkdir -p "$dir"
	p=$(free_port) ps=$(free_port)
	site() { # ADDRESS EXTRA-LINE POLICY-LINE
		cat <<-EOF
			$1 {
				$2
				route /ws {
					query room
					to 127.0.0.1:$B1 127.0.0.1:$B2
					$3
				}
			}
		EOF
	}
	gopts=$'{\n\tlog_level warn\n}'
	# Sticky hashing on room if this build has it (lb_policy hash).
	{ echo "$gopts"; site "127.0.0.1:$p" "" "$policy"; } >"$dir/Caddyfile"
	if ! "$BIN/wsproxy" validate -config "$dir/Caddyfile" >"$LOGS/wsproxy-validate.log" 2>&1; then
		note wsproxy "lb_policy hash query:room not accepted by this build ($(head -1 "$LOGS/wsproxy-validate.log")); default policy used"
		policy=""
	fi
	# TLS with a certificate file, if this build terminates TLS.
	WSS=""
	for addr in "https://127.0.0.1:$ps" "127.0.0.1:$ps"; do
		{ echo "$gopts"; site "127.0.0.1:$p" "" "$policy"; site "$addr" "tls $CERT $KEY" "$policy"; } >"$dir/Caddyfile.tls"
		if "$BIN/wsproxy" validate -config "$dir/Caddyfile.tls" >"$LOGS/wsproxy-validate-tls.log" 2>&1; then
			WSS="wss://127.0.0.1:$ps/ws?room={i}"
			cp "$dir/Caddyfile.tls" "$dir/Caddyfile"
			break
		fi
	done
	if [ -z "$WSS" ]; then
		{ echo "$gopts"; site "127.0.0.1:$p" "" "$policy"; } >"$dir/Caddyfile"
		err=$(head -1 "$LOGS/wsproxy-validate-tls.log")
		note wsproxy "wss: n/a (TLS not built yet: $err)"
	fi
	"$BIN/wsproxy" run -config "$dir/Caddyfile" >"$LOGS/wsproxy.log" 2>&1 &
	PID=$!
	STARTED+=($PID)
	URL="ws://127.0.0.1:$p/ws?room={i}"
	wait_listen "$p" "$PID"
}

start_haproxy() {
	local dir=$WORK/haproxy p ps
	mkdir -p "$dir"
	p=$(free_port) ps=$(free_port)
	# maxconn 9900: HAProxy needs two descriptors per proxied connection
	# plus a few; 2 x 9900 + listeners stays under the 20,000 cap.
	cat >"$dir/haproxy.cfg" <<-EOF
		global
		    maxconn 9900
		    nbthread $(nproc)
		    log stderr format short local0 warning
		    ssl-default-bind-options ssl-min-ver TLSv1.2

		defaults
		    mode http
		    log global
		    option dontlognull
		    timeout connect 5s
		    timeout client 30s
		    timeout server 30s
		    timeout http-request 10s
		    timeout tunnel 1h
		    timeout client-fin 30s

		frontend ws_in
		    bind 127.0.0.1:$p
		    bind 127.0.0.1:$ps ssl crt $PEM alpn http/1.1
		    maxconn 9900
		    default_backend echo

		backend echo
		    balance url_param room
		    hash-type consistent
		    server echo-1 127.0.0.1:$B1 maxconn 9900
		    server echo-2 127.0.0.1:$B2 maxconn 9900
	EOF
	haproxy -c -q -f "$dir/haproxy.cfg" >"$LOGS/haproxy-check.log" 2>&1 || return 1
	haproxy -db -f "$dir/haproxy.cfg" >"$LOGS/haproxy.log" 2>&1 &
	PID=$!
	STARTED+=($PID)
	URL="ws://127.0.0.1:$p/ws?room={i}"
	WSS="wss://127.0.0.1:$ps/ws?room={i}"
	wait_listen "$p" "$PID"
}

start_nginx() {
	local dir=$WORK/nginx p ps
	mkdir -p "$dir/logs" "$dir/tmp"
	p=$(free_port) ps=$(free_port)
	# worker_processes auto (= nproc = 2): HAProxy runs a thread per core and
	# the Go proxies use every core, so one nginx worker would cap it at one
	# core in the throughput runs. RSS and CPU are summed over the master
	# and all workers. Each worker may hold 20,000 descriptors.
	cat >"$dir/nginx.conf" <<-EOF
		daemon off;
		master_process on;
		worker_processes auto;
		worker_rlimit_nofile 20000;
		pid $dir/nginx.pid;
		error_log $dir/logs/error.log warn;

		events {
		    worker_connections 20000;
		}

		http {
		    access_log off;
		    client_body_temp_path $dir/tmp/body;
		    proxy_temp_path $dir/tmp/proxy;
		    fastcgi_temp_path $dir/tmp/fastcgi;
		    uwsgi_temp_path $dir/tmp/uwsgi;
		    scgi_temp_path $dir/tmp/scgi;

		    map \$http_upgrade \$connection_upgrade {
		        default upgrade;
		        ''      close;
		    }

		    upstream echo {
		        hash \$arg_room consistent;
		        server 127.0.0.1:$B1;
		        server 127.0.0.1:$B2;
		    }

		    server {
		        listen 127.0.0.1:$p;
		        listen 127.0.0.1:$ps ssl;
		        ssl_certificate $CERT;
		        ssl_certificate_key $KEY;
		        ssl_protocols TLSv1.2 TLSv1.3;

		        location /ws {
		            proxy_pass http://echo;
		            proxy_http_version 1.1;
		            proxy_set_header Upgrade \$http_upgrade;
		            proxy_set_header Connection \$connection_upgrade;
		            proxy_set_header Host \$host;
		            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
		            proxy_connect_timeout 5s;
		            proxy_read_timeout 1h;
		            proxy_send_timeout 1h;
		        }
		    }
		}
	EOF
	nginx -t -q -p "$dir" -c "$dir/nginx.conf" >"$LOGS/nginx-check.log" 2>&1 || return 1
	nginx -p "$dir" -c "$dir/nginx.conf" >"$LOGS/nginx.log" 2>&1 &
	PID=$!
	STARTED+=($PID)
	URL="ws://127.0.0.1:$p/ws?room={i}"
	WSS="wss://127.0.0.1:$ps/ws?room={i}"
	wait_listen "$p" "$PID"
}

start_caddy() {
	local dir=$WORK/caddy p ps policy="lb_policy query room"
	mkdir -p "$dir/data" "$dir/config"
	p=$(free_port) ps=$(free_port)
	caddy_conf() {
		cat <<-EOF
			{
			    admin off
			    auto_https off
			    storage file_system $dir/data
			    log {
			        level WARN
			    }
			}
			(ws) {
			    reverse_proxy /ws 127.0.0.1:$B1 127.0.0.1:$B2 {
			        $policy
			    }
			}
			http://127.0.0.1:$p {
			    import ws
			}
			https://127.0.0.1:$ps {
			    tls $CERT $KEY
			    import ws
			}
		EOF
	}
	caddy_conf >"$dir/Caddyfile"
	# lb_policy query arrived in Caddy 2.7; older ones hash the whole URI
	# (path and query: here the path is fixed, so it hashes the room).
	if ! XDG_CONFIG_HOME=$dir/config XDG_DATA_HOME=$dir/data caddy adapt --config "$dir/Caddyfile" --adapter caddyfile >/dev/null 2>"$LOGS/caddy-adapt.log"; then
		policy="lb_policy uri_hash"
		caddy_conf >"$dir/Caddyfile"
		note caddy "lb_policy query is not in this Caddy; used lb_policy uri_hash (hashes path+query; the path is fixed, so the room decides)"
	fi
	XDG_CONFIG_HOME=$dir/config XDG_DATA_HOME=$dir/data HOME=$dir \
		caddy run --config "$dir/Caddyfile" --adapter caddyfile >"$LOGS/caddy.log" 2>&1 &
	PID=$!
	STARTED+=($PID)
	URL="ws://127.0.0.1:$p/ws?room={i}"
	WSS="wss://127.0.0.1:$ps/ws?room={i}"
	wait_listen "$p" "$PID" && wait_listen "$ps" "$PID"
}

run_target() { # NAME
	local t=$1
	echo "== $t"
	if ! start_backends; then
		not_run "$t" "the echo backends did not start (see $LOGS/echo-*.log)"
		stop_backends
		return
	fi
	case $t in
	direct)
		version direct "client → backend, no proxy"
		suite direct 0 "ws://127.0.0.1:$B1/ws?room={i} ws://127.0.0.1:$B2/ws?room={i}" "" "$HOLD_DIRECT"
		note direct "connections alternate between the two backends; there is no proxy process, so no RSS or CPU figures; wss not run (the echo backend has no TLS)"
		;;
	*)
		if [ "$t" = wsproxy ] && [ -n "$WSPROXY_BUILD_ERR" ]; then
			not_run wsproxy "$WSPROXY_BUILD_ERR"
		elif [ "$t" != wsproxy ] && [ -z "${HAVE[$t]:-}" ]; then
			not_run "$t" "not installed (apt-get install $t failed; see $LOGS/apt.log)"
		else
			case $t in
			wsproxy)
				version wsproxy "$("$BIN/wsproxy" version 2>&1 | head -1), git $(git rev-parse --short HEAD 2>/dev/null)$(git diff --quiet HEAD 2>/dev/null || echo ' with uncommitted changes')"
				note wsproxy "built from the $WSPROXY_SRC"
				;;
			haproxy) version haproxy "$(haproxy -v 2>&1 | head -1)" ;;
			nginx) version nginx "$(nginx -v 2>&1 | head -1)" ;;
			caddy) version caddy "Caddy $(caddy version 2>&1 | head -1)" ;;
			esac
			PID="" URL="" WSS=""
			if "start_$t"; then
				suite "$t" "$PID" "$URL" "$WSS" "$HOLD"
			else
				not_run "$t" "did not start: $(tail -2 "$LOGS/$t"*.log 2>/dev/null | tr '\n' ' ')"
			fi
			[ -n "$PID" ] && stop_pid "$PID"
		fi
		;;
	esac
	stop_backends
}

T0=$(date +%s)
LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
for t in direct wsproxy haproxy nginx caddy; do
	run_target "$t"
done

PARAMS="hold $HOLD connections per proxy ($HOLD_DIRECT direct) from $SRC, idle $SETTLE; echo $ECHO_CONNS connections for $DUR after $WARM warm-up; fixed rate $RATE msg/s per connection x $ECHO_CONNS for $RATE_DUR; handshakes $HS_WORKERS workers for $HS_DUR; fd limit $FDS; load average (1/5/15 min) at start $LOAD0, at end $(cut -d' ' -f1-3 /proc/loadavg)"
cp "$RUNS" "$OUT/$OUTNAME.jsonl"
"$BIN/report" -runs "$RUNS" -source "bench/results/$OUTNAME.jsonl" -md "$OUT/$OUTNAME.md" -svg "$OUT/$OUTNAME.svg" -cmd "$COMMAND" -params "$PARAMS" ||
	{ echo "compare.sh: report failed" >&2; exit 1; }
echo "== done in $(($(date +%s) - T0)) s: $OUT/$OUTNAME.md, $OUT/$OUTNAME.svg, $OUT/$OUTNAME.jsonl (logs in $LOGS)"
