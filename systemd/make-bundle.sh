#!/usr/bin/env bash
# Prepare an offline install bundle for air-gapped devices: the project wheel, every
# dependency wheel of the [device] extra for the target platform, install.sh, the unit and
# the example config. On the device: `sudo ./install.sh --offline .` inside the bundle.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SRC_TREE=$(cd "$HERE/.." && pwd)
OUT=""
ARCH=aarch64
PY_VER=3.11
RASPI=0
TARBALL=0
MODELS=()
PYTHON=${PYTHON:-python3}

usage() {
  cat <<EOF
usage: $(basename "$0") --out DIR [options]

Download wheels for a target device (runs on any Linux host with pip and network) and lay
out an offline bundle:
  DIR/install.sh, DIR/emotion-edge.service, DIR/emotion-edge-kiosk.service, DIR/config.example.toml,
  DIR/wheels/*.whl (project + [device] deps), DIR/models/ (optional), DIR/SHA256SUMS

options:
  --out DIR          bundle directory (created; existing wheels are replaced)
  --arch ARCH        aarch64 (Pi 4/5, Jetson; default) or x86_64
  --python X.Y       the device's python3 version (default $PY_VER = Debian 12 / Pi OS Bookworm)
  --raspi            Raspberry Pi OS: keep NumPy < 2 so apt's picamera2 keeps working
                     (same constraint install.sh applies there)
  --model FILE       also ship FILE (.tflite + .json sidecar) in DIR/models/ (repeatable);
                     install with: ./install.sh --offline . --model models/NAME.tflite
  --tar              also write DIR.tar.gz
  -h, --help         this help

example:
  systemd/make-bundle.sh --out /tmp/ee-bundle --raspi --tar
  scp /tmp/ee-bundle.tar.gz pi@kiosk: && ssh pi@kiosk \\
    'tar xzf ee-bundle.tar.gz && cd ee-bundle && sudo ./install.sh --offline .'
EOF
}

while [ $# -gt 0 ]; do
  case "$1" in
    --out) OUT="${2:?}"; shift 2 ;;
    --arch) ARCH="${2:?}"; shift 2 ;;
    --python) PY_VER="${2:?}"; shift 2 ;;
    --raspi) RASPI=1; shift ;;
    --model) MODELS+=("${2:?}"); shift 2 ;;
    --tar) TARBALL=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "make-bundle.sh: unknown option: $1 (see --help)" >&2; exit 2 ;;
  esac
done
die() { echo "make-bundle.sh: error: $*" >&2; exit 1; }
say() { echo "make-bundle.sh: $*" >&2; }
[ -n "$OUT" ] || die "--out DIR is required (see --help)"
case "$ARCH" in aarch64|x86_64) ;; *) die "--arch $ARCH: aarch64 or x86_64" ;; esac
[[ "$PY_VER" =~ ^3\.[0-9]+$ ]] || die "--python $PY_VER: want X.Y, e.g. 3.11"
for m in "${MODELS[@]}"; do
  [ -f "$m" ] && [ -f "${m%.tflite}.json" ] || die "--model $m: need $m and ${m%.tflite}.json"
done

# Newest glibc first; Debian 12 has glibc 2.36, so every tag up to 2_28 runs there.
# (pip does not widen one --platform to older manylinux tags by itself.)
PLATFORMS=("manylinux_2_28_$ARCH" "manylinux_2_27_$ARCH" "manylinux_2_17_$ARCH"
  "manylinux2014_$ARCH")
PIP=("$PYTHON" -m pip --disable-pip-version-check -q)

mkdir -p "$OUT/wheels" "$OUT/models"
OUT=$(cd "$OUT" && pwd)
rm -f "$OUT"/wheels/*.whl

say "building the project wheel from $SRC_TREE"
# Build from a copy: setuptools writes build/ and *.egg-info into the tree it builds.
tmp_src=$(mktemp -d)
trap 'rm -rf "$tmp_src"' EXIT
tar -C "$SRC_TREE" --exclude=./.git --exclude=./.venv --exclude='./runs' --exclude='./build' \
  --exclude='*.egg-info' --exclude='__pycache__' --exclude='./benchmarks/results' -cf - . \
  | tar -C "$tmp_src" -xf -
"${PIP[@]}" wheel --no-deps -w "$OUT/wheels" "$tmp_src"
WHEEL=$(ls -1 "$OUT"/wheels/emotion_edge-*.whl | head -n1)

constraints=()
if [ "$RASPI" = 1 ]; then
  printf '%s\n' 'numpy<2' 'opencv-python-headless<4.12' >"$tmp_src/constraints.txt"
  constraints=(-c "$tmp_src/constraints.txt")
fi
plat_args=()
for p in "${PLATFORMS[@]}"; do plat_args+=(--platform "$p"); done
say "downloading [device] wheels for cp${PY_VER/./} ${ARCH}"
"${PIP[@]}" download --only-binary=:all: "${plat_args[@]}" --implementation cp \
  --python-version "$PY_VER" --abi "cp${PY_VER/./}" -d "$OUT/wheels" "${constraints[@]}" \
  "${WHEEL}[device]"

cp "$HERE/install.sh" "$HERE/emotion-edge.service" "$HERE/emotion-edge-kiosk.service" "$OUT/"
cp "$SRC_TREE/device/config.example.toml" "$OUT/"
chmod +x "$OUT/install.sh"
for m in "${MODELS[@]}"; do cp "$m" "${m%.tflite}.json" "$OUT/models/"; done
{
  echo "emotion-edge offline bundle"
  echo "created: $(date -u +%FT%TZ)"
  echo "target: linux $ARCH, CPython $PY_VER, raspi constraints: $RASPI"
  echo "source: $(git -C "$SRC_TREE" describe --always --dirty 2>/dev/null || echo unknown)"
  echo "wheels:"
  (cd "$OUT/wheels" && ls -1 ./*.whl | sed 's#^\./#  #')
} >"$OUT/BUNDLE.txt"
(cd "$OUT" && find . -type f ! -name SHA256SUMS -printf '%P\n' | sort | xargs sha256sum \
  >SHA256SUMS)
say "bundle ready: $OUT ($(du -sh "$OUT" | cut -f1), $(ls "$OUT"/wheels | wc -l) wheels)"
if [ "$TARBALL" = 1 ]; then
  tar -C "$(dirname "$OUT")" -czf "$OUT.tar.gz" "$(basename "$OUT")"
  say "tarball: $OUT.tar.gz"
fi
echo "$OUT"
