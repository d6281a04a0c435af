# bench/lib.sh: helpers the bench scripts share (sourced, not run).

# free_port: a TCP port nothing listens on, from 20000-29999.
free_port() {
	local p
	while :; do
		p=$((20000 + RANDOM % 10000))
		[ -z "$(ss -Hltn "sport = :$p" 2>/dev/null)" ] && { echo "$p"; return; }
	done
}

# wait_listen PORT PID: until something listens on PORT, the process dies,
# or 15 s pass.
wait_listen() {
	local i
	for i in $(seq 150); do
		[ -n "$(ss -Hltn "sport = :$1" 2>/dev/null)" ] && return 0
		kill -0 "$2" 2>/dev/null || return 1
		sleep 0.1
	done
	return 1
}
