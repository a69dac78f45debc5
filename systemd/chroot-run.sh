#!/usr/bin/env bash
# Run a command inside a (possibly foreign-architecture) root filesystem with /proc, /sys and
# /dev mounted, in a private mount namespace: every mount disappears when the command ends,
# even if it is killed, so nothing is left mounted under ROOT.
#
# QEMU 7.2 user mode passes the host's x86 /proc/cpuinfo through to the guest, and LiteRT's
# CPU feature probe (cpuinfo) segfaults on it; for an aarch64 root, an aarch64 cpuinfo
# (a Raspberry Pi 4's Cortex-A72, or $CHROOT_CPUINFO) is bind-mounted over /proc/cpuinfo.
set -euo pipefail

usage() {
  cat <<EOF
usage: $(basename "$0") ROOT COMMAND [ARG...]

Run COMMAND in ROOT (chroot) with proc/sys/dev mounted in a private mount namespace and a
clean environment (PATH, HOME=/root, LANG=C.UTF-8, plus CHROOT_ENV="K=V ..." if set).
An aarch64 ROOT gets an aarch64 /proc/cpuinfo (CHROOT_CPUINFO=FILE to choose it).
Needs root; a foreign ROOT needs qemu-user-static registered with binfmt_misc (binfmt.sh).
EOF
}

if [ "${1:-}" = "-h" ] || [ "${1:-}" = "--help" ] || [ $# -lt 2 ]; then
  usage
  [ $# -ge 1 ] && [ "$1" != "-h" ] && [ "$1" != "--help" ] && exit 2
  exit 0
fi
[ "$(id -u)" = 0 ] || { echo "chroot-run: needs root" >&2; exit 1; }

if [ "${_CHROOT_RUN_INNER:-}" != 1 ]; then
  export _CHROOT_RUN_INNER=1
  exec unshare --mount --propagation private -- "$0" "$@"
fi
unset _CHROOT_RUN_INNER

ROOT=$(cd "$1" && pwd)
shift
[ -x "$ROOT/bin/sh" ] || [ -L "$ROOT/bin/sh" ] \
  || { echo "chroot-run: $ROOT has no /bin/sh" >&2; exit 1; }

mkdir -p "$ROOT/proc" "$ROOT/sys" "$ROOT/dev" "$ROOT/tmp"
mount -t proc proc "$ROOT/proc"
mount -t sysfs -o ro sysfs "$ROOT/sys"
mount --rbind /dev "$ROOT/dev"
# Name resolution for apt/pip inside (mmdebstrap leaves no resolv.conf in the root).
if [ -f /etc/resolv.conf ] && [ ! -L "$ROOT/etc/resolv.conf" ]; then
  [ -e "$ROOT/etc/resolv.conf" ] || : >"$ROOT/etc/resolv.conf"
  mount --bind /etc/resolv.conf "$ROOT/etc/resolv.conf"
fi

# What architecture is the root? Ask its dpkg database, not the host.
root_arch=$(sed -n 's/^Architecture: //p' "$ROOT/var/lib/dpkg/status" 2>/dev/null \
  | grep -v '^all$' | sort | uniq -c | sort -rn | awk 'NR==1 {print $2}')
if [ "$root_arch" = arm64 ] && [ "$(uname -m)" != aarch64 ]; then
  cpuinfo=${CHROOT_CPUINFO:-}
  if [ -z "$cpuinfo" ]; then
    cpuinfo=$(mktemp)
    for i in 0 1 2 3; do
      printf 'processor\t: %d\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm crc32 cpuid\n' "$i"
      printf 'CPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x0\n'
      printf 'CPU part\t: 0xd08\nCPU revision\t: 3\n\n'
    done >"$cpuinfo"
  fi
  mount --bind "$cpuinfo" "$ROOT/proc/cpuinfo"
fi

env_args=(PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root
  LANG=C.UTF-8 TERM=dumb)
# shellcheck disable=SC2206  # word splitting of "K=V K2=V2" is the interface
[ -n "${CHROOT_ENV:-}" ] && env_args+=($CHROOT_ENV)
exec chroot "$ROOT" /usr/bin/env -i "${env_args[@]}" "$@"
