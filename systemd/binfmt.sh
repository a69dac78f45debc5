#!/usr/bin/env bash
# Make sure the kernel runs ARCH binaries through qemu-user-static (binfmt_misc), so that
# `chroot ROOT cmd` works in a foreign-architecture root. Idempotent; needs root for changes.
set -euo pipefail

case "${1:-}" in
  -h|--help|"")
    echo "usage: $(basename "$0") ARCH   (Debian arch: arm64, armhf, ...)"
    echo "Registers qemu-user-static for ARCH with binfmt_misc when not yet registered."
    [ -n "${1:-}" ]; exit $? ;;
esac

case "$1" in
  arm64) QEMU=aarch64 ;;
  armhf|armel) QEMU=arm ;;
  riscv64) QEMU=riscv64 ;;
  *) QEMU="$1" ;;
esac

BINFMT=/proc/sys/fs/binfmt_misc
if [ -e "$BINFMT/qemu-$QEMU" ] && grep -q '^enabled' "$BINFMT/qemu-$QEMU"; then
  exit 0
fi
[ "$(id -u)" = 0 ] || { echo "binfmt: qemu-$QEMU not registered and not root" >&2; exit 1; }
if ! command -v "qemu-$QEMU-static" >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends qemu-user-static >&2
fi
if [ ! -e "$BINFMT/register" ]; then
  mount -t binfmt_misc binfmt_misc "$BINFMT"
fi
if [ ! -e "$BINFMT/qemu-$QEMU" ]; then
  conf=/usr/lib/binfmt.d/qemu-$QEMU.conf
  [ -f "$conf" ] || { echo "binfmt: $conf missing (qemu-user-static too old?)" >&2; exit 1; }
  # The F flag makes the kernel open the interpreter now, so it works inside any chroot.
  cat "$conf" >"$BINFMT/register"
fi
echo 1 >"$BINFMT/qemu-$QEMU"
echo "binfmt: qemu-$QEMU registered" >&2
