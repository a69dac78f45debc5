#!/usr/bin/env bash
# Build (or reuse from the cache) a minimal Debian root filesystem tarball for another
# architecture, for testing the installer and running the daemon under qemu-user emulation.
#
# The tarball is cached under ${EMOTION_EDGE_CACHE:-~/.cache/emotion-edge}/rootfs/ keyed by a
# hash of everything that goes into it (suite, arch, variant, package list, recipe version),
# so CI pays for mmdebstrap once per package-list change. Prints the tarball path on stdout.
set -euo pipefail

RECIPE_VERSION=1
ARCH=arm64
SUITE=bookworm
VARIANT=minbase
MIRROR=http://deb.debian.org/debian
PACKAGES="python3,python3-venv"
CACHE_DIR="${EMOTION_EDGE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/emotion-edge}/rootfs"
FORCE=0
QUIET=0

usage() {
  cat <<EOF
usage: $(basename "$0") [options]

Build a minimal Debian root filesystem tarball with mmdebstrap (cached), for chroot tests
under qemu-user-static. Prints the path of the .tar.zst on stdout.

options:
  --arch ARCH         Debian architecture (default: $ARCH)
  --suite SUITE       Debian suite (default: $SUITE)
  --packages LIST     comma-separated extra packages (default: $PACKAGES)
  --mirror URL        Debian mirror (default: $MIRROR)
  --cache-dir DIR     where tarballs are kept (default: $CACHE_DIR)
  --force             rebuild even when a cached tarball exists
  --print-key         print the cache key and exit
  -q, --quiet         no progress messages on stderr
  -h, --help          this help

Needs root, mmdebstrap and arch-test (apt-get installed when missing) and, for a foreign --arch,
qemu-user-static with binfmt_misc (registered here when missing; see binfmt.sh).
EOF
}

PRINT_KEY=0
while [ $# -gt 0 ]; do
  case "$1" in
    --arch) ARCH="$2"; shift 2 ;;
    --suite) SUITE="$2"; shift 2 ;;
    --packages) PACKAGES="$2"; shift 2 ;;
    --mirror) MIRROR="$2"; shift 2 ;;
    --cache-dir) CACHE_DIR="$2"; shift 2 ;;
    --force) FORCE=1; shift ;;
    --print-key) PRINT_KEY=1; shift ;;
    -q|--quiet) QUIET=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "error: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done

say() { [ "$QUIET" = 1 ] || echo "build-rootfs: $*" >&2; }
die() { echo "build-rootfs: error: $*" >&2; exit 1; }

# Sorted so that "a,b" and "b,a" share a cache entry.
PACKAGES_SORTED=$(tr ',' '\n' <<<"$PACKAGES" | sed '/^$/d' | sort -u | paste -sd, -)
KEY=$(printf '%s\n' "recipe=$RECIPE_VERSION" "arch=$ARCH" "suite=$SUITE" "variant=$VARIANT" \
  "packages=$PACKAGES_SORTED" | sha256sum | cut -c1-16)
if [ "$PRINT_KEY" = 1 ]; then echo "$KEY"; exit 0; fi

OUT="$CACHE_DIR/debian-$SUITE-$ARCH-$KEY.tar.zst"
if [ -s "$OUT" ] && [ "$FORCE" = 0 ]; then
  say "cached: $OUT"
  echo "$OUT"
  exit 0
fi

[ "$(id -u)" = 0 ] || die "needs root (mmdebstrap root mode, chroot)"
HERE=$(cd "$(dirname "$0")" && pwd)
# mmdebstrap only Recommends arch-test, but refuses a foreign --arch without it.
need=()
command -v mmdebstrap >/dev/null || need+=(mmdebstrap)
command -v arch-test >/dev/null || need+=(arch-test)
if [ ${#need[@]} -gt 0 ]; then
  say "installing ${need[*]}"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends "${need[@]}" >&2
fi
command -v zstd >/dev/null || die "zstd missing: apt-get install zstd"
if [ "$ARCH" != "$(dpkg --print-architecture)" ]; then
  "$HERE/binfmt.sh" "$ARCH" >&2
fi

mkdir -p "$CACHE_DIR"
TMP="$OUT.tmp.$$"
trap 'rm -f "$TMP"' EXIT
START=$(date +%s)
say "mmdebstrap $SUITE $ARCH ($VARIANT + $PACKAGES_SORTED) -> $OUT"
# Docs, man pages and locales are dead weight in a test root; apt lists are dropped by
# mmdebstrap's cleanup, so the root holds no package index (the installer must cope offline).
quiet=()
[ "$QUIET" = 1 ] && quiet=(--quiet)
mmdebstrap --mode=root --format=tar --variant="$VARIANT" --arch="$ARCH" --include="$PACKAGES_SORTED" \
  --aptopt='Acquire::Languages "none"' \
  --dpkgopt='path-exclude=/usr/share/man/*' \
  --dpkgopt='path-exclude=/usr/share/locale/*' \
  --dpkgopt='path-include=/usr/share/locale/locale.alias' \
  --dpkgopt='path-exclude=/usr/share/doc/*' \
  --dpkgopt='path-exclude=/usr/share/info/*' \
  "${quiet[@]}" \
  "$SUITE" "$TMP" "$MIRROR" >&2 </dev/null
# mmdebstrap picks the compressor from the extension; .tmp.N has none, so compress here.
zstd -q -T0 -3 --rm "$TMP" -o "$TMP.zst"
mv "$TMP.zst" "$OUT"
say "built in $(( $(date +%s) - START )) s: $OUT ($(du -h "$OUT" | cut -f1))"
echo "$OUT"
