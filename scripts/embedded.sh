#!/usr/bin/env bash
# Builds a monolithic uWSGI with the python plugin and forksafe compiled in,
# from Debian's uWSGI source package:  build/embedded/uwsgi
#
#   scripts/embedded.sh          fetch the source if needed, build if needed
#   scripts/embedded.sh fetch    only fetch, verify and unpack the source
#
# Idempotent: the source is fetched once (apt-get source, checked against the
# archive's SHA-256), and the binary is rebuilt only when one of forksafe's
# sources, the build profile or this script is newer than it.  uWSGI's own
# build keeps its objects, so a rebuild recompiles forksafe and relinks.
#
# When apt has no source entries for the Debian suites (the Debian default),
# deb-src twins of the configured deb entries go to
# SOURCEPARTS/forksafe-src.sources (see scripts/debsrc.py) and apt-get update
# runs.  Every apt path comes from apt-config, so APT_CONFIG can point the
# whole thing at another configuration.
#
# Environment: PYTHON (default /usr/bin/python3: the python plugin is built
# for the interpreter running uWSGI's build), CC, CPUCOUNT (default: all
# cores), FORKSAFE_EMBEDDED_DIR (default build/embedded).
set -Eeuo pipefail
trap 'echo "embedded: ERROR: unexpected failure at ${BASH_SOURCE[0]}:$LINENO: $BASH_COMMAND" >&2' ERR

root=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=${PYTHON:-/usr/bin/python3}
CC=${CC:-gcc}
out=${FORKSAFE_EMBEDDED_DIR:-$root/build/embedded}
profile=$root/buildconf/forksafe-embedded.ini
handler_src=$root/tests/embedded/symbol_handlers.c
binary=$out/uwsgi
mode=${1:-build}

die() {
    echo "embedded: ERROR: $*" >&2
    exit 1
}

say() {
    echo "embedded: $*"
}

source_available() {
    local records
    records=$(apt-cache showsrc --only-source uwsgi 2>/dev/null) || return 1
    grep -q '^Version:' <<<"$records"
}

# Makes `apt-get source uwsgi` possible: deb-src entries, then fresh lists.
ensure_deb_src() {
    local SOURCES_LIST SOURCES_DIR LISTS_DIR added
    if source_available; then
        return
    fi
    command -v apt-get >/dev/null || die "apt-get not found: the embedded build takes uWSGI's source from Debian"
    eval "$(apt-config shell SOURCES_LIST Dir::Etc::sourcelist/f SOURCES_DIR Dir::Etc::sourceparts/d \
        LISTS_DIR Dir::State::lists/d)"
    if [ "$(id -u)" -ne 0 ]; then
        die "apt knows no source package 'uwsgi' (no deb-src entries?) and this is not root;" \
            "run 'make embedded' as root, or add deb-src entries to $SOURCES_DIR and run apt-get update"
    fi
    if ! added=$("$PYTHON" "$root/scripts/debsrc.py" --sources-list "$SOURCES_LIST" \
        --sources-dir "$SOURCES_DIR" --lists "$LISTS_DIR" --write "${SOURCES_DIR%/}/forksafe-src.sources"); then
        die "cannot work out deb-src entries for uWSGI's source package (see above)"
    fi
    if [ -n "$added" ]; then
        say "added deb-src entries to ${SOURCES_DIR%/}/forksafe-src.sources:"
        sed 's/^/    /' <<<"$added"
    fi
    say "apt-get update"
    if ! apt-get update -qq; then
        echo "embedded: warning: apt-get update reported errors; checking for uwsgi's source anyway" >&2
    fi
    source_available || die "apt still knows no source package 'uwsgi' after adding deb-src entries" \
        "and apt-get update: check ${SOURCES_DIR%/}/forksafe-src.sources and the network"
}

# The unpacked, verified upstream tree, if a previous run left one.
unpacked_source() {
    local stamp
    for stamp in "$out"/uwsgi-*/.forksafe-source; do
        if [ -f "$stamp" ]; then
            dirname "$stamp"
            return 0
        fi
    done
    return 0
}

# apt-get source, then the tarball is checked against the SHA-256 of the
# archive's Sources index and unpacked as uwsgi-VERSION.
fetch_source() {
    local tmp tarball name expected actual version listing top
    ensure_deb_src
    tmp=$out/download.tmp
    rm -rf "$tmp"
    mkdir -p "$tmp"
    say "apt-get source --download-only --tar-only uwsgi"
    if ! (cd "$tmp" && apt-get source --download-only --tar-only uwsgi) >"$out/fetch.log" 2>&1; then
        cat "$out/fetch.log" >&2
        die "apt-get source --download-only --tar-only uwsgi failed (log: $out/fetch.log)"
    fi
    tarball=$(find "$tmp" -maxdepth 1 -name 'uwsgi_*.orig.tar.*' | head -n 1)
    [ -n "$tarball" ] || die "apt-get source left no uwsgi_*.orig.tar.* in $tmp (log: $out/fetch.log)"
    name=$(basename "$tarball")
    expected=$(apt-cache showsrc --only-source uwsgi |
        awk -v f="$name" '$3 == f && length($1) == 64 { print $1 }' | sort -u)
    actual=$(sha256sum "$tarball" | cut -d' ' -f1)
    [ -n "$expected" ] || die "no SHA-256 for $name in apt's Sources index"
    [ "$expected" = "$actual" ] || die "$name has SHA-256 $actual, the archive says $expected"
    version=${name#uwsgi_}
    version=${version%.orig.tar.*}
    listing=$(tar -tf "$tarball") || die "$name is not a readable tar archive"
    top=${listing%%/*}
    grep -qx "$top/uwsgiconfig.py" <<<"$listing" || die "$name has no $top/uwsgiconfig.py"
    rm -rf "$out/uwsgi-$version" "$tmp/unpack"
    mkdir -p "$tmp/unpack"
    tar -xf "$tarball" -C "$tmp/unpack"
    mv "$tmp/unpack/$top" "$out/uwsgi-$version"
    mv "$tarball" "$out/$name"
    echo "uwsgi $version $name sha256:$actual" >"$out/uwsgi-$version/.forksafe-source"
    rm -rf "$tmp"
    say "uWSGI $version source in $out/uwsgi-$version ($name, SHA-256 verified)"
}

# Any input newer than the binary (or no binary) means a rebuild.
needs_build() {
    [ -x "$binary" ] || return 0
    [ -n "$(find "$root/uwsgi" "$root/uwsgiplugin.py" "$root/lib" "$root/include" \
        "$profile" "$handler_src" "$root/scripts/embedded.sh" -newer "$binary" -print -quit)" ]
}

build() {
    local src=$1 started elapsed warnings
    started=$(date +%s%N)
    # A fresh copy of forksafe: uWSGI writes objects next to the sources,
    # and only compares them with the .c file, not the headers it includes.
    rm -rf "$out/forksafe" "$out/handlers"
    mkdir -p "$out/forksafe/uwsgi" "$out/forksafe/lib" "$out/forksafe/include" "$out/handlers"
    cp -p "$root/uwsgiplugin.py" "$out/forksafe/"
    cp -p "$root"/uwsgi/*.c "$root"/uwsgi/*.h "$out/forksafe/uwsgi/"
    cp -p "$root"/lib/*.c "$root"/lib/*.h "$root"/lib/*.ld "$out/forksafe/lib/"
    cp -p "$root"/include/*.h "$out/forksafe/include/"
    "$CC" -std=gnu11 -O2 -g -fPIC -Wall -Wextra -Werror -I"$root/include" \
        -c "$handler_src" -o "$out/handlers/symbol_handlers.o"
    say "building uWSGI in $src with profile ${profile#"$root"/} (log: $out/build.log)"
    if ! (cd "$src" && CPUCOUNT=${CPUCOUNT:-$(nproc)} "$PYTHON" uwsgiconfig.py --build "$profile") \
        >"$out/build.log" 2>&1; then
        tail -n 40 "$out/build.log" >&2
        die "uWSGI's build failed (log: $out/build.log)"
    fi
    # forksafe must build cleanly under uWSGI's own CFLAGS as well as ours.
    warnings=$(grep -F "$out/forksafe/" "$out/build.log" | grep -E '(warning|error):' || true)
    if [ -n "$warnings" ]; then
        echo "$warnings" >&2
        die "forksafe sources give warnings under uWSGI's CFLAGS (log: $out/build.log)"
    fi
    cp "$src/uwsgi" "$binary.tmp"
    mv "$binary.tmp" "$binary"
    "$binary" --version >/dev/null || die "$binary does not run"
    elapsed=$((($(date +%s%N) - started) / 100000000))
    say "built $binary (uWSGI $("$binary" --version), python + forksafe embedded)" \
        "in $((elapsed / 10)).$((elapsed % 10))s"
}

mkdir -p "$out"
src=$(unpacked_source)
if [ "$mode" = fetch ]; then
    [ -n "$src" ] || fetch_source
    exit 0
fi
[ "$mode" = build ] || die "unknown mode '$mode' (expected: fetch, or nothing)"
if ! needs_build; then
    say "$binary is up to date"
    exit 0
fi
# From here on, a failure leaves no binary: tests never run a stale one.
rm -f "$binary"
if [ -z "$src" ]; then
    fetch_source
    src=$(unpacked_source)
fi
build "$src"
