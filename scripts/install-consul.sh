#!/usr/bin/env bash
# Builds the Consul agent that the discovery tests run, from the Go module
# proxy alone, and caches it outside the repository.
#
# Usage: scripts/install-consul.sh
# Prints the absolute path of the binary on stdout (and nothing else there);
# progress goes to stderr.
#
# Environment:
#   CONSUL_VERSION  module version to build (default below). v1.22.6 is the
#                   newest that builds this way with Go 1.26 and
#                   GOTOOLCHAIN=local: its go.mod says go 1.25.8, and the
#                   versions of api/, sdk/, … that it requires match its code.
#                   (v1.22.7 does not: its code needs a newer consul/api than
#                   the v1.33.7 its go.mod requires.)
#   WSPROXY_CACHE   cache directory (default ${XDG_CACHE_HOME:-$HOME/.cache}/wsproxy)
#
# Consul is not in Debian, and `go install github.com/hashicorp/consul@v…`
# refuses it because its go.mod has replace lines pointing into the source
# tree (./api, ./sdk, …) whose nested modules are not part of the module zip.
# So: download the module, copy it somewhere writable, drop the replace lines
# so the required versions of those modules come from the proxy too, and
# build. About 3 minutes on a 2-core machine; later runs print the cached path
# at once. Idempotent and safe to run from CI; it needs no network beyond the
# Go module proxy (GOPROXY), and checks nothing against the checksum database
# for the modules whose versions the dropped replaces change (GOSUMDB=off for
# the build only; the download of Consul itself is verified as usual).
set -euo pipefail

version="${CONSUL_VERSION:-v1.22.6}"
cache="${WSPROXY_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/wsproxy}"
bin="$cache/consul/consul-$version"

if [ -x "$bin" ]; then
	echo "$bin"
	exit 0
fi

command -v go >/dev/null || { echo "install-consul.sh: Go is required" >&2; exit 1; }

# One build at a time (go test runs packages in parallel): wait for a
# concurrent run, then use what it built.
mkdir -p "$(dirname "$bin")"
if command -v flock >/dev/null; then
	exec 9>"$(dirname "$bin")/.install.lock"
	flock 9
	if [ -x "$bin" ]; then
		echo "$bin"
		exit 0
	fi
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/wsproxy-consul.XXXXXX")"
tmpbin="$bin.tmp.$$"
trap 'chmod -R u+w "$work" 2>/dev/null || true; rm -rf "$work" "$tmpbin"' EXIT

# Never let the build pick up the repository's go.work or flags, or reach for
# a newer toolchain.
export GOWORK=off GOTOOLCHAIN=local GOFLAGS=

echo "install-consul.sh: downloading github.com/hashicorp/consul@$version" >&2
mkdir -p "$work/dl"
(
	cd "$work/dl"
	go mod init wsproxy-consul-download >/dev/null 2>&1
	go mod download -json "github.com/hashicorp/consul@$version" >"$work/dl.json"
)
dir="$(sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p' "$work/dl.json" | head -n1)"
if [ -z "$dir" ] || [ ! -f "$dir/go.mod" ]; then
	echo "install-consul.sh: go mod download gave no source directory:" >&2
	cat "$work/dl.json" >&2
	exit 1
fi

src="$work/src"
cp -R "$dir" "$src"
chmod -R u+w "$src"
cd "$src"

# Drop every replace line ("old [version] => new"), versioned or not.
for old in $(awk '/=>/ {
	sub(/^[[:space:]]*replace[[:space:]]+/, "")
	if ($2 == "=>") print $1; else print $1 "@" $2
}' go.mod); do
	go mod edit -dropreplace="$old"
done
if grep -q '=>' go.mod; then
	echo "install-consul.sh: replace lines left in go.mod:" >&2
	grep '=>' go.mod >&2
	exit 1
fi

echo "install-consul.sh: building consul $version (a few minutes)" >&2
GOFLAGS="-mod=mod -buildvcs=false" GOSUMDB=off go build -trimpath -o "$tmpbin" .
mv -f "$tmpbin" "$bin"
echo "$bin"
