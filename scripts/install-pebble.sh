#!/usr/bin/env bash
# Installs Pebble, a real ACME server for tests, and its DNS/challenge helper
# pebble-challtestsrv, into a cache directory outside the repository:
#
#   ${WSPROXY_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/wsproxy}/pebble-<version>/
#     pebble                   the ACME server
#     pebble-challtestsrv      the DNS server the tests point Pebble's resolver at
#     certs/cert.pem, key.pem  Pebble's own HTTPS certificate (localhost, 127.0.0.1)
#     certs/pebble.minica.pem  the root an ACME client must trust to talk to Pebble
#
# Idempotent: a complete install is reused. Prints the pebble binary's path on
# stdout (progress goes to stderr). The tests in tls/ run this script themselves
# when PEBBLE_BIN is not set, so running it first only moves the build out of the
# test run. PEBBLE_VERSION overrides the pinned version (tls/ expects the pin);
# WSPROXY_CACHE the cache directory, as for install-consul.sh.
set -euo pipefail

# v2.10.1 builds with Go 1.26 (GOTOOLCHAIN=local); its go.mod asks for go 1.24.
PEBBLE_VERSION=${PEBBLE_VERSION:-v2.10.1}
module=github.com/letsencrypt/pebble/v2
cache="${WSPROXY_CACHE:-${XDG_CACHE_HOME:-${HOME:?install-pebble.sh: set HOME, XDG_CACHE_HOME or WSPROXY_CACHE}/.cache}/wsproxy}"
dir="$cache/pebble-$PEBBLE_VERSION"

complete() {
	[ -x "$dir/pebble" ] && [ -x "$dir/pebble-challtestsrv" ] &&
		[ -s "$dir/certs/cert.pem" ] && [ -s "$dir/certs/key.pem" ] &&
		[ -s "$dir/certs/pebble.minica.pem" ]
}

if complete; then
	echo "$dir/pebble"
	exit 0
fi

command -v go >/dev/null || { echo "install-pebble.sh: Go is required" >&2; exit 1; }
mkdir -p "$dir"
# Build into a private directory and move into place, so two runs at once never
# leave a half-written binary where the other looks.
tmp=$(mktemp -d "$dir/.install.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

# Outside any module, with flags of the caller's module cleared: `go install
# pkg@version` builds with the module's own go.mod.
cd "$tmp"
export GOTOOLCHAIN=local GOFLAGS=-buildvcs=false
echo "install-pebble.sh: building pebble $PEBBLE_VERSION" >&2
GOBIN="$tmp/bin" go install -ldflags "-X main.version=$PEBBLE_VERSION" "$module/cmd/pebble@$PEBBLE_VERSION" "$module/cmd/pebble-challtestsrv@$PEBBLE_VERSION"

# The test certificates ship in the module (test/certs); take them from its
# source in the module cache (read-only there, so copy with fresh modes).
src=$(go mod download -json "$module@$PEBBLE_VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
[ -n "$src" ] && [ -d "$src/test/certs" ] || { echo "install-pebble.sh: no source for $module@$PEBBLE_VERSION" >&2; exit 1; }
mkdir -p "$tmp/certs"
install -m 0644 "$src/test/certs/localhost/cert.pem" "$tmp/certs/cert.pem"
install -m 0600 "$src/test/certs/localhost/key.pem" "$tmp/certs/key.pem"
install -m 0644 "$src/test/certs/pebble.minica.pem" "$tmp/certs/pebble.minica.pem"

mkdir -p "$dir/certs"
for f in cert.pem key.pem pebble.minica.pem; do mv -f "$tmp/certs/$f" "$dir/certs/$f"; done
mv -f "$tmp/bin/pebble-challtestsrv" "$dir/pebble-challtestsrv"
mv -f "$tmp/bin/pebble" "$dir/pebble"
complete || { echo "install-pebble.sh: install in $dir is incomplete" >&2; exit 1; }
echo "install-pebble.sh: installed in $dir" >&2
echo "$dir/pebble"
