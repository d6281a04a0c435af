#!/usr/bin/env bash
# Side-by-side benchmark: the direct path, wsproxy, HAProxy, nginx and Caddy
# in front of the same two echo backends on loopback, each driven by
# bench/wsbench, in interleaved rounds (round 1: every target in order,
# round 2: every target again, ...; each target and its backends started
# fresh every round), then a Markdown report (median and min–max over
# rounds, wsproxy ÷ peer ratios per round) and an SVG chart of the medians.
#
#   bench/compare.sh                       full run: 3 rounds, every target,
#                                          every measurement → latest.*
#   bench/compare.sh -quick                smoke run: 1 round, short windows → quick.*
#   bench/compare.sh -targets wsproxy,haproxy -only echo64,echo64_c1000 -rounds 5
#                                          focused run → focused.*
# Options:
#   -rounds N       rounds (default 3; 1 with -quick)
#   -targets LIST   comma-separated, from direct,wsproxy,haproxy,nginx,caddy
#                   (default: all, in that order; the order is the run order)
#   -only LIST      measurements, in run order (default: see DEFAULT_ONLY):
#                   holdN, wss_holdN (N idle connections, N <= 9000),
#                   echo64, echo4k, wss_echo64, wss_echo4k, each with an
#                   optional _cN (N connections; default 100), rate,
#                   hs_ws, hs_wss, syscalls (strace -c under 64 B echo)
#   -out NAME       results name in bench/results (default: latest for the
#                   full default run, quick with -quick, focused otherwise)
#   -pair MODE      target (default): each round runs every measurement on
#                   one target, then the next target; measurement: each
#                   round runs one measurement on every target in turn,
#                   each started fresh for it, then the next measurement,
#                   so the figures a ratio pairs are taken seconds apart
#                   rather than a whole suite apart (this machine's speed
#                   drifts over minutes; costs a start per measurement)
#
# Runs as root (it installs haproxy, nginx and caddy from Debian's packages
# if they are missing). Every process it starts listens on 127.0.0.1 only,
# is tracked by PID and stopped by PID; no systemd. A peer that cannot be
# installed or started is reported as such in the table, and the run goes on.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

usage() { sed -n '2,36p' "$0"; }
QUICK=0 ROUNDS="" TARGETS="" ONLY="" OUTNAME="" PAIR=target
COMMAND="bench/compare.sh${*:+ $*}"
while [ $# -gt 0 ]; do
	arg=$1 val=""
	case $arg in
	-*=*) val=${arg#*=} arg=${arg%%=*} ;;
	esac
	case $arg in
	-quick | --quick) QUICK=1 ;;
	-h | --help) usage; exit 0 ;;
	-rounds | -targets | -only | -out | -pair)
		if [ -z "$val" ]; then
			[ $# -ge 2 ] || { echo "compare.sh: $arg needs a value" >&2; exit 2; }
			val=$2
			shift
		fi
		case $arg in
		-rounds) ROUNDS=$val ;;
		-targets) TARGETS=$val ;;
		-only) ONLY=$val ;;
		-out) OUTNAME=$val ;;
		-pair) PAIR=$val ;;
		esac
		;;
	*) echo "compare.sh: unknown argument $arg (see -h)" >&2; exit 2 ;;
	esac
	shift
done

ALL_TARGETS=direct,wsproxy,haproxy,nginx,caddy
# The full set answers issues 12 and 13: idle memory at two counts (is it
# flat?), echo at 10/100/1,000 connections, fixed-rate latency, handshakes,
# the wss rows and syscalls per message. Holds come first so each one gets
# a fresh proxy without restarting it twice.
DEFAULT_ONLY=hold2000,hold8000,wss_hold2000,wss_hold8000,echo64,echo4k,echo64_c10,echo4k_c10,echo64_c1000,echo4k_c1000,rate,hs_ws,hs_wss,wss_echo64,syscalls
QUICK_ONLY=hold500,wss_hold500,echo64,echo4k,rate,hs_ws,hs_wss,wss_echo64,syscalls

if [ -z "$OUTNAME" ]; then
	if [ "$QUICK" = 1 ]; then
		OUTNAME=quick
	elif [ -z "$TARGETS$ONLY" ] && [ "${ROUNDS:-3}" = 3 ]; then
		OUTNAME=latest
	else
		OUTNAME=focused
	fi
fi
[[ $OUTNAME =~ ^[A-Za-z0-9_.-]+$ ]] || { echo "compare.sh: -out $OUTNAME: letters, digits, _ . - only" >&2; exit 2; }
case $PAIR in target | measurement) ;; *) echo "compare.sh: -pair $PAIR: target or measurement" >&2; exit 2 ;; esac
if [ "$QUICK" = 1 ]; then : "${ROUNDS:=1}" "${ONLY:=$QUICK_ONLY}"; fi
: "${ROUNDS:=3}" "${TARGETS:=$ALL_TARGETS}" "${ONLY:=$DEFAULT_ONLY}"
[[ $ROUNDS =~ ^[1-9][0-9]?$ ]] || { echo "compare.sh: -rounds $ROUNDS: want 1 to 99" >&2; exit 2; }

IFS=, read -ra TLIST <<<"$TARGETS"
for t in "${TLIST[@]}"; do
	[[ ,$ALL_TARGETS, == *",$t,"* ]] || { echo "compare.sh: unknown target $t (want some of $ALL_TARGETS)" >&2; exit 2; }
done
IFS=, read -ra MLIST <<<"$ONLY"
# Every held connection costs the proxy two descriptors of its 20,000.
MAX_HOLD=9000
for m in "${MLIST[@]}"; do
	if [[ $m =~ ^(wss_)?hold([0-9]+)$ ]]; then
		n=${BASH_REMATCH[2]}
		[ "$n" -ge 1 ] && [ "$n" -le $MAX_HOLD ] || { echo "compare.sh: $m: hold 1 to $MAX_HOLD connections" >&2; exit 2; }
	elif [[ $m =~ ^(wss_)?echo(64|4k)(_c([0-9]+))?$ ]]; then
		n=${BASH_REMATCH[4]:-100}
		[ "$n" -ge 1 ] && [ "$n" -le $MAX_HOLD ] || { echo "compare.sh: $m: 1 to $MAX_HOLD connections" >&2; exit 2; }
	elif [[ ! $m =~ ^(rate|hs_ws|hs_wss|syscalls)$ ]]; then
		echo "compare.sh: unknown measurement $m (want holdN, wss_holdN, echo64[_cN], echo4k[_cN], wss_echo64[_cN], wss_echo4k[_cN], rate, hs_ws, hs_wss, syscalls)" >&2
		exit 2
	fi
done

# The machines cap a process at 20,000 open files; ask for all of it.
ulimit -n 20000 2>/dev/null || ulimit -n "$(ulimit -Hn)"
FDS=$(ulimit -n)

if [ "$QUICK" = 1 ]; then
	SETTLE=1s DUR=2s WARM=500ms RATE_DUR=2s HS_DUR=1500ms SYS_DUR=2s PAUSE=0.2
else
	# Short windows, repeated: three 4 s windows interleaved with the peers
	# say more than one 10 s window that a neighbour's build can spoil.
	SETTLE=3s DUR=4s WARM=1s RATE_DUR=4s HS_DUR=3s SYS_DUR=3s PAUSE=0.5
fi
ECHO_CONNS=100
RATE=100 # per connection: 100 connections x 100/s = 10,000 msg/s
HS_WORKERS=16
SRC=127.0.0.2-127.0.0.254
HAVE_STRACE=0
command -v strace >/dev/null && HAVE_STRACE=1

T0=$(date +%s) # the whole run, builds and installs included
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
# config TARGET TEXT: how the target was configured, one line per target.
config() { printf '{"label":"%s/config","note":"%s"}\n' "$1" "$(json_escape "$2")" >>"$RUNS"; }
# not_run TARGET TEXT: the target could not run this round ($ROUND).
not_run() { printf '{"label":"%s/status/r%s","error":"%s"}\n' "$1" "$ROUND" "$(json_escape "$2")" >>"$RUNS"; echo "  $1: not run: $2"; }
ROUND=0

. "$ROOT/bench/lib.sh" # free_port, wait_listen

# ---- peers from Debian ----------------------------------------------------
declare -A HAVE
missing=()
for p in haproxy nginx caddy; do
	[[ ,$TARGETS, == *",$p,"* ]] || continue # only the peers asked for
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
wsb() { # TARGET RUN wsbench-args...: one wsbench run of round $ROUND
	local t=$1 r=$2 out rc log
	shift 2
	log=$LOGS/$t.$r.r$ROUND.txt
	out=$("$BIN/wsbench" -json -label "$t/$r/r$ROUND" "$@" 2>"$log")
	rc=$?
	sed 's/^/    /' "$log"
	if [ -n "$out" ]; then
		echo "$out" >>"$RUNS"
	else
		note "$t" "round $ROUND, $r: wsbench exited $rc without a result: $(tail -1 "$log")"
	fi
	sleep "$PAUSE" # let the last connections' closes finish
}

# syscalls TARGET PID URL BACKEND-PIDS: strace -c on every process of the
# target (nginx's workers too; -f attaches every thread) while wsbench runs
# a 64 B closed-loop echo with no warm-up, so the strace window holds the
# whole measured window; the 100 connections' handshakes are in it too
# (a few hundred syscalls against tens of thousands). strace slows the
# proxy down a lot: the counts per message are the figure, not the rate.
syscalls() {
	local t=$1 pid=$2 url=$3 bp=$4 sp out rc log st pids=() p
	log=$LOGS/$t.syscalls.r$ROUND.txt st=$WORK/strace.$t.r$ROUND
	for p in $pid $(ps -o pid= --ppid "$pid" 2>/dev/null); do pids+=(-p "$p"); done
	strace -c -f -qq -o "$st" "${pids[@]}" 2>"$log.strace" &
	sp=$!
	STARTED+=($sp)
	sleep 1 # let strace attach to every thread
	out=$("$BIN/wsbench" -json -label "$t/syscalls/r$ROUND" -mode echo -url "$url" -conns "$ECHO_CONNS" -size 64 \
		-duration "$SYS_DUR" -warmup 0 -pid "$pid" -backend-pid "$bp" 2>"$log")
	rc=$?
	kill -INT "$sp" 2>/dev/null # strace writes its summary when it detaches
	wait "$sp" 2>/dev/null
	stop_pid "$sp"
	sed 's/^/    /' "$log"
	if [ -z "$out" ] || [ ! -s "$st" ]; then
		note "$t" "round $ROUND, syscalls: no result (wsbench exit $rc; strace: $(tail -1 "$log.strace" 2>/dev/null))"
		return
	fi
	# strace -c: "% time seconds usecs/call calls [errors] syscall", then
	# a "total" line. Sum the read and write families and the epoll waits.
	local counts
	counts=$(awk '
		$NF ~ /^[a-z_0-9]+$/ && $1 ~ /^[0-9.]+$/ && (NF == 5 || NF == 6) {
			calls = $4; errs = (NF == 6) ? $5 : 0; n = $NF
			if (n == "total") { total = calls; next }
			if (n ~ /^(read|readv|recvfrom|recvmsg|recvmmsg)$/) { r += calls; re += errs }
			else if (n ~ /^(write|writev|sendto|sendmsg|sendmmsg)$/) { w += calls }
			else if (n ~ /^epoll_(p?wait|pwait2)$/) { e += calls }
		}
		END { printf "\"read_calls\":%d,\"read_errors\":%d,\"write_calls\":%d,\"epoll_waits\":%d,\"syscalls\":%d", r, re, w, e, total }' "$st")
	# The wsbench result with the counts added: one line, one object.
	echo "${out%\}},\"strace\":{$counts}}" >>"$RUNS"
	echo "    strace: $counts"
	sleep "$PAUSE"
}

# restart TARGET: a fresh process for a hold run, so each idle-memory
# figure (and 2,000 against 8,000) starts from a process that has not
# grown its heap and pools on earlier runs.
restart() {
	local t=$1
	[ -n "$PID" ] && stop_pid "$PID"
	PID="" URL="" WSS=""
	"start_$t" >/dev/null && return 0
	not_run "$t" "did not restart: $(tail -2 "$LOGS/$t"*.log 2>/dev/null | tr '\n' ' ')"
	return 1
}

# suite TARGET: every measurement of $MLIST on the running target (PID,
# URL, WSS; PID 0 for the direct path).
suite() {
	local t=$1 m n size conns url bp used=0
	# The backends' CPU is sampled too, so that the proxy, the backends,
	# the load generator and everything else on the machine can be told
	# apart in each window.
	bp=$(IFS=,; echo "${BPIDS[*]}")
	for m in "${MLIST[@]}"; do
		url=$URL
		case $m in wss_* | hs_wss) url=$WSS ;; esac
		if [ "$t" = direct ]; then
			case $m in
			*hold* | wss_* | hs_wss | syscalls) continue ;; # nothing to measure without a proxy or TLS
			esac
		elif [ -z "$url" ]; then
			note "$t" "round $ROUND, $m: not run (no wss:// listener)"
			continue
		fi
		if [[ $m =~ ^(wss_)?hold([0-9]+)$ ]]; then
			if [ "$used" = 1 ]; then
				restart "$t" || return
				url=$URL
				[ -n "${BASH_REMATCH[1]}" ] && url=$WSS
			fi
			wsb "$t" "$m" -mode hold -url "$url" -insecure -conns "${BASH_REMATCH[2]}" -src "$SRC" -settle "$SETTLE" -pid "$PID"
		elif [[ $m =~ ^(wss_)?echo(64|4k)(_c([0-9]+))?$ ]]; then
			size=64
			[ "${BASH_REMATCH[2]}" = 4k ] && size=4096
			conns=${BASH_REMATCH[4]:-$ECHO_CONNS}
			wsb "$t" "$m" -mode echo -url "$url" -insecure -conns "$conns" -size "$size" -duration "$DUR" -warmup "$WARM" -pid "$PID" -backend-pid "$bp"
		else
			case $m in
			rate) wsb "$t" rate -mode rate -url "$url" -conns "$ECHO_CONNS" -rate "$RATE" -size 64 -duration "$RATE_DUR" -warmup "$WARM" -pid "$PID" -backend-pid "$bp" ;;
			hs_ws | hs_wss) wsb "$t" "$m" -mode handshakes -url "$url" -insecure -workers "$HS_WORKERS" -duration "$HS_DUR" -warmup "$WARM" -src "$SRC" -pid "$PID" -backend-pid "$bp" ;;
			syscalls)
				if [ "$HAVE_STRACE" = 1 ]; then
					syscalls "$t" "$PID" "$url" "$bp"
				else
					note "$t" "syscalls: not run (no strace on this machine)"
				fi
				;;
			esac
		fi
		used=1
	done
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
	# As an operator would run it: warnings only, and an access log to a
	# file sampling 1% of connections (JSON lines, buffered by wsproxy).
	local alog="access_log $dir/access.log 0.01"
	gopts=$'{\n\tlog_level warn\n\t'"$alog"$'\n}'
	{ echo "$gopts"; site "127.0.0.1:$p" "" ""; } >"$dir/Caddyfile"
	if ! "$BIN/wsproxy" validate -config "$dir/Caddyfile" >"$LOGS/wsproxy-validate.log" 2>&1; then
		note wsproxy "access_log FILE 0.01 not accepted by this build ($(head -1 "$LOGS/wsproxy-validate.log")); access log off"
		alog="access_log off"
		gopts=$'{\n\tlog_level warn\n\t'"$alog"$'\n}'
	fi
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
	local adesc="access log to a file, 1% of connections sampled, written in batches"
	[ "$alog" = "access_log off" ] && adesc="access log off"
	config wsproxy "global log_level warn; $alog ($adesc); ${policy:-default lb_policy}; default GOMAXPROCS (= $(nproc) cores); $([ -n "$WSS" ] && echo "wss:// from a tls CERT KEY site (the ECDSA P-256 certificate)" || echo "no wss://"); Caddyfile in $dir"
	"$BIN/wsproxy" run -config "$dir/Caddyfile" >>"$LOGS/wsproxy.log" 2>&1 &
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
		    # Access log: one line per connection when it ends (the
		    # tunnel's too), 1 in 100 sampled, to stdout, which is a file.
		    log stdout format raw sample 1:100 local0 info
		    option httplog
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
	config haproxy "nbthread $(nproc); process messages to stderr at warning; access log option httplog, log stdout sample 1:100 (1% of connections) to a file; balance url_param room, hash-type consistent; maxconn 9900; timeout tunnel 1h; wss:// on a second bind ... ssl crt (the same certificate), alpn http/1.1; config in $dir"
	haproxy -db -f "$dir/haproxy.cfg" >>"$dir/access.log" 2>>"$LOGS/haproxy.log" &
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
		    # Access log: 1% of connections (split_clients on the random
		    # request id), buffered 64 KiB and flushed every second.
		    split_clients \$request_id \$log_sampled {
		        1%  1;
		        *   "";
		    }
		    access_log $dir/logs/access.log combined buffer=64k flush=1s if=\$log_sampled;
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
	config nginx "worker_processes auto ($(nproc) workers); error_log warn; access_log combined, buffer=64k flush=1s, sampled 1% (split_clients on \$request_id, if=); hash \$arg_room consistent; proxy_read_timeout 1h; worker_connections 20000; wss:// on a second listen ... ssl (the same certificate); config in $dir"
	nginx -p "$dir" -c "$dir/nginx.conf" >>"$LOGS/nginx.log" 2>&1 &
	PID=$!
	STARTED+=($PID)
	URL="ws://127.0.0.1:$p/ws?room={i}"
	WSS="wss://127.0.0.1:$ps/ws?room={i}"
	wait_listen "$p" "$PID"
}

start_caddy() {
	local dir=$WORK/caddy p ps policy="lb_policy query room" alog alogdesc
	mkdir -p "$dir/data" "$dir/config"
	p=$(free_port) ps=$(free_port)
	# Access log per site to a file, sampled by zap: in each second the
	# first entry, then one in 100 (about 1% under load).
	alog="log {
			        output file $dir/access.log
			        sampling {
			            interval 1s
			            first 1
			            thereafter 100
			        }
			    }"
	alogdesc="site log to a file with sampling (per second: the first, then 1 in 100)"
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
			    $alog
			}
			https://127.0.0.1:$ps {
			    tls $CERT $KEY
			    import ws
			    $alog
			}
		EOF
	}
	caddy_conf >"$dir/Caddyfile"
	if ! XDG_CONFIG_HOME=$dir/config XDG_DATA_HOME=$dir/data caddy adapt --config "$dir/Caddyfile" --adapter caddyfile >/dev/null 2>"$LOGS/caddy-adapt.log" &&
		grep -q sampling "$LOGS/caddy-adapt.log"; then
		alog="" alogdesc="access log off (this Caddy's log directive has no sampling; an unsampled log would write a line per connection)"
		caddy_conf >"$dir/Caddyfile"
		note caddy "$alogdesc"
	fi
	# lb_policy query arrived in Caddy 2.7; older ones hash the whole URI
	# (path and query: here the path is fixed, so it hashes the room).
	if ! XDG_CONFIG_HOME=$dir/config XDG_DATA_HOME=$dir/data caddy adapt --config "$dir/Caddyfile" --adapter caddyfile >/dev/null 2>"$LOGS/caddy-adapt.log"; then
		policy="lb_policy uri_hash"
		caddy_conf >"$dir/Caddyfile"
		note caddy "lb_policy query is not in this Caddy; used lb_policy uri_hash (hashes path+query; the path is fixed, so the room decides)"
	fi
	config caddy "global log level WARN; $alogdesc; reverse_proxy $policy; admin off, auto_https off; wss:// from tls CERT KEY (the same certificate); default GOMAXPROCS; Caddyfile in $dir"
	XDG_CONFIG_HOME=$dir/config XDG_DATA_HOME=$dir/data HOME=$dir \
		caddy run --config "$dir/Caddyfile" --adapter caddyfile >>"$LOGS/caddy.log" 2>&1 &
	PID=$!
	STARTED+=($PID)
	URL="ws://127.0.0.1:$p/ws?room={i}"
	WSS="wss://127.0.0.1:$ps/ws?room={i}"
	wait_listen "$p" "$PID" && wait_listen "$ps" "$PID"
}

run_target() { # NAME: one round ($ROUND) of one target, fresh processes
	local t=$1
	echo "== round $ROUND/$ROUNDS: $t"
	if ! start_backends; then
		not_run "$t" "the echo backends did not start (see $LOGS/echo-*.log)"
		stop_backends
		return
	fi
	PID="" URL="" WSS=""
	case $t in
	direct)
		if [ "$ROUND" = 1 ]; then
			version direct "client → backend, no proxy"
			config direct "the client talks to the two echo backends itself, connections alternating between them"
			note direct "no proxy process, so no RSS or CPU figures and no hold runs; no wss (the echo backend has no TLS)"
		fi
		PID=0 URL="ws://127.0.0.1:$B1/ws?room={i} ws://127.0.0.1:$B2/ws?room={i}"
		suite direct
		;;
	*)
		if [ "$t" = wsproxy ] && [ -n "$WSPROXY_BUILD_ERR" ]; then
			not_run wsproxy "$WSPROXY_BUILD_ERR"
		elif [ "$t" != wsproxy ] && [ -z "${HAVE[$t]:-}" ]; then
			not_run "$t" "not installed (apt-get install $t failed; see $LOGS/apt.log)"
		else
			if [ "$ROUND" = 1 ]; then
				case $t in
				wsproxy)
					version wsproxy "$("$BIN/wsproxy" version 2>&1 | head -1), git $(git rev-parse --short HEAD 2>/dev/null)$(git diff --quiet HEAD 2>/dev/null || echo ' with uncommitted changes')"
					note wsproxy "built from the $WSPROXY_SRC"
					;;
				haproxy) version haproxy "$(haproxy -v 2>&1 | head -1)" ;;
				nginx) version nginx "$(nginx -v 2>&1 | head -1)" ;;
				caddy) version caddy "Caddy $(caddy version 2>&1 | head -1)" ;;
				esac
			fi
			if "start_$t"; then
				suite "$t"
			else
				not_run "$t" "did not start: $(tail -2 "$LOGS/$t"*.log 2>/dev/null | tr '\n' ' ')"
			fi
			[ -n "$PID" ] && stop_pid "$PID"
		fi
		;;
	esac
	PID=""
	stop_backends
}

T1=$(date +%s)
echo "compare.sh: installs, builds and certificate took $((T1 - T0)) s"
LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
echo "compare.sh: $ROUNDS round(s) of ${TLIST[*]}; measurements ${MLIST[*]}"
ALL_M=("${MLIST[@]}")
for ROUND in $(seq "$ROUNDS"); do
	if [ "$PAIR" = measurement ]; then
		for m in "${ALL_M[@]}"; do
			MLIST=("$m")
			for t in "${TLIST[@]}"; do
				run_target "$t"
			done
		done
		MLIST=("${ALL_M[@]}")
		continue
	fi
	for t in "${TLIST[@]}"; do
		run_target "$t"
	done
done

if [ "$PAIR" = measurement ]; then
	PAIRING="each measurement run on every target in turn, in the order ${TLIST[*]}, each target and its backends started fresh for every measurement"
else
	PAIRING="interleaved in the order ${TLIST[*]}, each target and its backends started fresh every round (and again before each hold run)"
fi
PARAMS="$ROUNDS round(s), $PAIRING; measurements ${MLIST[*]}; holdN: N idle connections from $SRC, idle $SETTLE before the sample; echo: closed loop, $ECHO_CONNS connections unless _cN, $DUR after $WARM warm-up; fixed rate $RATE msg/s per connection × $ECHO_CONNS for $RATE_DUR; handshakes $HS_WORKERS workers for $HS_DUR; syscalls: strace -c over a $SYS_DUR 64 B echo; fd limit $FDS; load average (1/5/15 min) at start $LOAD0, at end $(cut -d' ' -f1-3 /proc/loadavg)"
cp "$RUNS" "$OUT/$OUTNAME.jsonl"
"$BIN/report" -runs "$RUNS" -source "bench/results/$OUTNAME.jsonl" -md "$OUT/$OUTNAME.md" -svg "$OUT/$OUTNAME.svg" -cmd "$COMMAND" -params "$PARAMS" ||
	{ echo "compare.sh: report failed" >&2; exit 1; }
echo "== done in $(($(date +%s) - T0)) s ($(($(date +%s) - T1)) s measuring): $OUT/$OUTNAME.md, $OUT/$OUTNAME.svg, $OUT/$OUTNAME.jsonl (logs in $LOGS)"
