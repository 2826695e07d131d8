#!/bin/sh
# fetch.sh: make Debian source packages available for the real-world
# walk-throughs (internal/realworld). Idempotent: a package already unpacked
# in the cache is not downloaded again, so CI can keep the cache between runs.
#
#   scripts/realworld/fetch.sh [PKG ...]     (default: every walk-through's package)
#
# The cache is ${HOTFLEET_SRC_CACHE:-/var/cache/hotfleet/src}; each package
# lands in CACHE/PKG/ (the .dsc, the tarballs and the unpacked tree), with
# CACHE/PKG/.version holding the Debian version that was fetched.
set -eu

CACHE=${HOTFLEET_SRC_CACHE:-/var/cache/hotfleet/src}
SRC_LIST=/etc/apt/sources.list.d/hotfleet-src.sources
PKGS=${*:-"lua5.4 expat redis libxml2 sqlite3"}

die() { echo "fetch.sh: $*" >&2; exit 1; }

need_fetch=
for p in $PKGS; do
	[ -f "$CACHE/$p/.version" ] || need_fetch=1
done
if [ -z "$need_fetch" ]; then
	echo "fetch.sh: all of $PKGS already in $CACHE"
	exit 0
fi

[ "$(id -u)" = 0 ] || die "adding deb-src lines and running apt-get update needs root; run it as root or fill $CACHE by hand"
command -v dpkg-source >/dev/null || die "apt-get source needs dpkg-source; install dpkg-dev (apt-get install dpkg-dev)"

# deb-src lines matching the machine's deb lines (bookworm, -updates, -security).
if [ ! -f "$SRC_LIST" ]; then
	cat >"$SRC_LIST.tmp" <<'SOURCES'
# Added by hotfleet scripts/realworld/fetch.sh: source packages for the
# real-world live-patching walk-throughs.
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb-src
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SOURCES
	mv "$SRC_LIST.tmp" "$SRC_LIST"
	apt-get update -qq || die "apt-get update failed (is deb.debian.org reachable?)"
else
	# The lines are there; the index may not be (a fresh CI container).
	for p in $PKGS; do
		if [ -z "$(apt-cache showsrc "$p" 2>/dev/null)" ]; then
			apt-get update -qq || die "apt-get update failed (is deb.debian.org reachable?)"
			break
		fi
	done
fi

mkdir -p "$CACHE"
for p in $PKGS; do
	[ -f "$CACHE/$p/.version" ] && { echo "fetch.sh: $p: cached ($(cat "$CACHE/$p/.version"))"; continue; }
	rm -rf "$CACHE/$p.tmp"
	mkdir -p "$CACHE/$p.tmp"
	# _apt downloads into the directory (no "unsandboxed" warning).
	chown _apt "$CACHE/$p.tmp" 2>/dev/null || true
	# The newest version first; a mirror that lacks it (404) falls back to
	# the next one the index lists.
	ok=
	for v in $(apt-cache showsrc "$p" | sed -n 's/^Version: //p' | sort -ru -V); do
		if (cd "$CACHE/$p.tmp" && apt-get source -qq "$p=$v" >/dev/null 2>"$CACHE/$p.tmp/.err"); then
			ok=1
			break
		fi
		echo "fetch.sh: $p $v: $(grep '^E:' "$CACHE/$p.tmp/.err" | head -n1); trying an older version" >&2
		find "$CACHE/$p.tmp" -mindepth 1 -maxdepth 1 ! -name '*.orig.tar.*' ! -name .err -exec rm -rf {} +
	done
	[ -n "$ok" ] || die "apt-get source $p failed for every version apt-cache showsrc lists; see $CACHE/$p.tmp/.err"
	rm -f "$CACHE/$p.tmp/.err"
	chown -R root "$CACHE/$p.tmp"
	dsc=$(ls "$CACHE/$p.tmp"/*.dsc | head -n1)
	ver=$(sed -n 's/^Version: //p' "$dsc")
	printf '%s\n' "$ver" >"$CACHE/$p.tmp/.version"
	rm -rf "$CACHE/$p"
	mv "$CACHE/$p.tmp" "$CACHE/$p"
	echo "fetch.sh: $p: fetched $ver into $CACHE/$p"
done
