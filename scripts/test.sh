#!/usr/bin/env bash
# The whole test suite, from a clean checkout on a fresh machine.
# Installs what the tests need, then runs vet, gofmt and every test with the
# race detector. Extra arguments go to `go test` (e.g. -run TestName).
set -euo pipefail
cd "$(dirname "$0")/.."

command -v go >/dev/null || { echo "test.sh: Go is required (https://go.dev/dl)"; exit 1; }
go mod download

# Real parts the tests run: a Consul agent and the Pebble ACME server, built
# from the Go module proxy and cached outside the repository
# (${WSPROXY_CACHE:-${XDG_CACHE_HOME:-~/.cache}/wsproxy}). Consul takes a few minutes the
# first time.
echo "== installing Consul and Pebble (cached after the first run)"
WSPROXY_CONSUL_BIN="$(bash scripts/install-consul.sh)"
PEBBLE_BIN="$(bash scripts/install-pebble.sh)"
export WSPROXY_CONSUL_BIN PEBBLE_BIN

# Headless Chromium for the browser end-to-end test (examples/e2e), from Debian.
command -v chromium >/dev/null || if [ "$(id -u)" = 0 ]; then echo "== installing chromium"; apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; else echo "test.sh: chromium is missing and apt needs root: run 'apt-get install chromium' as root, or examples/e2e fails"; fi

echo "== go vet"
go vet ./...
echo "== gofmt"
unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [ -n "$unformatted" ]; then
	echo "gofmt would change:"; echo "$unformatted"; exit 1
fi

echo "== go test -race"
# Fuzz targets' seed corpora run as ordinary tests here.
go test -race -count=1 -timeout 15m "$@" ./...

# Tests built only without the race detector (allocation counts, which the
# detector's own allocations would spoil, and timing that -race skews on 2
# cores) run once more, without it.
norace=$(grep -rl --include='*_test.go' '^//go:build.*!race' . | sort)
if [ -n "$norace" ] && [ $# -eq 0 ]; then
	echo "== go test (tests built without -race only)"
	tests=$(grep -ho '^func Test[A-Za-z0-9_]*' $norace | sed 's/^func //' | paste -sd'|')
	# One package at a time: the handshake-rate storm measures a rate.
	go test -p 1 -count=1 -timeout 10m -run "^($tests)\$" $(dirname $norace | sort -u | sed 's|^|./|; s|^\./\./|./|')
fi
