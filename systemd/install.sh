#!/usr/bin/env bash
# Turn a fresh Raspberry Pi OS Bookworm (64-bit) / Debian / Ubuntu device into an emotion-edge
# sensor: apt packages, a venv in /opt/emotion-edge, a default config, the systemd unit,
# enable + start. Re-running it upgrades in place and keeps /etc/emotion-edge/config.toml.
# With --recorder it sets up a recording host instead: mosquitto with persistence and
# emotion-edge-record as a service writing to SQLite or PostgreSQL.
set -euo pipefail

PREFIX=/opt/emotion-edge
CONF_DIR=/etc/emotion-edge
STATE_DIR=/var/lib/emotion-edge
UNIT_NAME=emotion-edge.service
UNIT_DIR=/etc/systemd/system
DROPIN_DIR=$UNIT_DIR/$UNIT_NAME.d
DROPIN=$DROPIN_DIR/50-install-groups.conf
CREDENTIAL=/etc/credstore/emotion-edge-mqtt-password
KIOSK_UNIT=emotion-edge-kiosk.service
KIOSK_USER=emotion-edge-kiosk
KIOSK_ENV=$CONF_DIR/kiosk.env
RECORD_UNIT=emotion-edge-record.service
RECORD_ENV=$CONF_DIR/record.env
RECORD_DB_DEFAULT=/var/lib/emotion-edge-record/recording.sqlite
MOSQ_DROPIN=/etc/mosquitto/conf.d/emotion-edge.conf
MOSQ_PASSWD=/etc/mosquitto/emotion-edge.passwd
RECORD_MQTT_USER=recorder

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
MODE=install
OFFLINE=""
START=1
APT=1
SRC_SPEC=""
MQTT_HOST=""
MODEL=""
PURGE=0
KIOSK=0
RECORDER=0
RECORD_DB=""

usage() {
  cat <<EOF
usage: sudo $(basename "$0") [options]

Install or upgrade the emotion-edge daemon as a systemd service:
  - apt: python3, python3-venv (+ python3-picamera2 on Raspberry Pi OS)
  - venv $PREFIX (--system-site-packages: apt's picamera2/libcamera stay visible)
    with emotion-edge[device] from this source tree, or from an offline bundle
  - $CONF_DIR/config.toml from the example, only if absent (never overwritten)
  - $UNIT_DIR/$UNIT_NAME, then daemon-reload, enable, (re)start
Re-running it upgrades the package and restarts the service; config and state are kept.

options:
  --offline DIR       install from a bundle made by make-bundle.sh (no network: no apt,
                      no PyPI); apt packages must already be installed
  --source SPEC       camera for a NEW config: picamera2 | opencv:/dev/video0 | video:FILE ...
                      (default: picamera2 when python3-picamera2 is installed, else
                      opencv:/dev/video0)
  --mqtt-host HOST    for a NEW config: publish to this broker (default: events to the journal)
  --model FILE        copy FILE (.tflite + its .json sidecar) to $CONF_DIR/models/ and set
                      [classifier] model_path to it (model update or rollback; the previous
                      files stay; the old config is kept as config.toml.bak)
  --no-start          install and enable, but do not (re)start the service; implied when
                      systemd is not running (chroot, container, image build)
  --no-apt            do not call apt-get (fail if a needed package is missing)
  --kiosk             also the kiosk screen: apt cage + Chromium, a user $KIOSK_USER,
                      $KIOSK_UNIT (the live view full screen on tty1 instead of
                      its console login), [web] enabled on 127.0.0.1 (loopback only) in
                      the config; an existing config is edited, the old one kept as .bak
  --recorder          a recording host instead of a sensor: apt mosquitto with
                      $(basename "$MOSQ_DROPIN") (persistence, large per-session queues,
                      password file; systemd/mosquitto-recorder.conf) in /etc/mosquitto/conf.d,
                      a broker user "$RECORD_MQTT_USER", and $RECORD_UNIT (hardened)
                      recording the whole fleet from the local broker (or --mqtt-host HOST)
  --db URL            with --recorder: where to record, an SQLite file or postgresql://URL
                      (default $RECORD_DB_DEFAULT); a password in the URL
                      goes to $RECORD_ENV (root, 0600) as PGPASSWORD, not on the command line
  --uninstall         stop, disable, remove the units (kiosk too) and $PREFIX; keeps
                      $CONF_DIR and $STATE_DIR (the event spool) unless --purge;
                      with --kiosk: remove only the kiosk screen, keep the daemon;
                      with --recorder: remove only the recorder (unit, mosquitto drop-in)
  --purge             with --uninstall: also delete config, state and the MQTT credential
  -h, --help          this help

examples:
  sudo ./systemd/install.sh --mqtt-host 192.168.1.10
  sudo ./install.sh --offline .          (inside an unpacked bundle)
  sudo ./systemd/install.sh --model ~/emotion_int8_v2.tflite
  sudo ./systemd/install.sh --kiosk      (the device's own screen shows the live view)
  sudo ./systemd/install.sh --recorder   (broker + recorder into SQLite on this host)
  sudo ./systemd/install.sh --recorder --db postgresql://rec@db.lan/emotions
  sudo ./systemd/install.sh --uninstall [--purge]
EOF
}

while [ $# -gt 0 ]; do
  case "$1" in
    --offline) OFFLINE="${2:?--offline needs a directory}"; shift 2 ;;
    --source) SRC_SPEC="${2:?--source needs KIND[:URI]}"; shift 2 ;;
    --mqtt-host) MQTT_HOST="${2:?--mqtt-host needs a host}"; shift 2 ;;
    --model) MODEL="${2:?--model needs a .tflite file}"; shift 2 ;;
    --no-start) START=0; shift ;;
    --no-apt) APT=0; shift ;;
    --uninstall) MODE=uninstall; shift ;;
    --purge) PURGE=1; shift ;;
    --kiosk) KIOSK=1; shift ;;
    --recorder) RECORDER=1; shift ;;
    --db) RECORD_DB="${2:?--db needs an SQLite file or a postgresql:// URL}"; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "install.sh: unknown option: $1 (see --help)" >&2; exit 2 ;;
  esac
done

say() { echo "install.sh: $*"; }
warn() { echo "install.sh: warning: $*" >&2; }
die() { echo "install.sh: error: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root (sudo $0 ...)"
[ "$PURGE" = 0 ] || [ "$MODE" = uninstall ] || die "--purge only goes with --uninstall"
[ -z "$RECORD_DB" ] || [ "$RECORDER" = 1 ] || die "--db only goes with --recorder"
[ "$RECORDER" = 0 ] || [ "$KIOSK" = 0 ] || die "--recorder and --kiosk are for different hosts"

have_systemctl() { command -v systemctl >/dev/null 2>&1; }
# sd_booted(3): systemd is PID 1 exactly when this directory exists.
systemd_running() { [ -d /run/systemd/system ] && have_systemctl; }

installed() { [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" = "install ok installed" ]; }

is_raspberry_pi_os() {
  # Raspberry Pi OS ships its own apt repository (python3-picamera2 comes from there).
  grep -rqs 'archive.raspberrypi' /etc/apt/sources.list /etc/apt/sources.list.d/ \
    || [ -f /etc/rpi-issue ]
}

# ---------------------------------------------------------------------------- uninstall
do_uninstall_kiosk() {
  if have_systemctl; then
    if systemd_running; then
      systemctl disable --now "$KIOSK_UNIT" 2>/dev/null || true
    else
      systemctl disable "$KIOSK_UNIT" 2>/dev/null || true
    fi
    # the console login on tty1 that the kiosk took over comes back
    if [ -f "$UNIT_DIR/$KIOSK_UNIT" ]; then
      systemctl enable getty@tty1.service 2>/dev/null || true
    fi
  fi
  rm -f "$UNIT_DIR/$KIOSK_UNIT" "$KIOSK_ENV"
  if getent passwd "$KIOSK_USER" >/dev/null; then
    userdel "$KIOSK_USER" 2>/dev/null || warn "could not remove user $KIOSK_USER"
  fi
  say "kiosk removed (cage and Chromium stay installed: apt-get remove cage chromium)"
}

# disable_unit NAME: stop (where systemd runs) and disable a unit; absent is fine
disable_unit() {
  have_systemctl || return 0
  if systemd_running; then
    systemctl disable --now "$1" 2>/dev/null || true
  else
    systemctl disable "$1" 2>/dev/null || true
  fi
}

do_uninstall_recorder() {
  disable_unit "$RECORD_UNIT"
  rm -f "$UNIT_DIR/$RECORD_UNIT" "$RECORD_ENV"
  if [ -f "$MOSQ_DROPIN" ]; then
    rm -f "$MOSQ_DROPIN"
    systemd_running && { systemctl restart mosquitto 2>/dev/null || true; }
  fi
  if [ "$PURGE" = 1 ]; then
    rm -rf /var/lib/emotion-edge-record /var/lib/private/emotion-edge-record "$MOSQ_PASSWD"
    say "purged the recording (/var/lib/emotion-edge-record) and $MOSQ_PASSWD"
  else
    say "recorder removed; kept its recording (/var/lib/emotion-edge-record) and $MOSQ_PASSWD"
  fi
}

do_uninstall() {
  do_uninstall_kiosk
  if [ -f "$UNIT_DIR/$RECORD_UNIT" ]; then do_uninstall_recorder; fi
  disable_unit "$UNIT_NAME"
  rm -f "$UNIT_DIR/$UNIT_NAME" "$DROPIN"
  rmdir "$DROPIN_DIR" 2>/dev/null || true  # keeps an admin's `systemctl edit` override
  rm -rf "$PREFIX"
  if [ "$PURGE" = 1 ]; then
    rm -rf "$CONF_DIR" "$STATE_DIR" "/var/lib/private/emotion-edge" "$CREDENTIAL" "$DROPIN_DIR"
    say "purged $CONF_DIR, $STATE_DIR and $CREDENTIAL"
  else
    say "kept $CONF_DIR (config, models) and $STATE_DIR (event spool); --purge deletes them"
  fi
  systemd_running && systemctl daemon-reload
  say "uninstalled"
}

if [ "$MODE" = uninstall ] && [ "$KIOSK" = 1 ]; then
  [ "$PURGE" = 0 ] || die "--purge goes with a full --uninstall, not with --kiosk"
  do_uninstall_kiosk
  systemd_running && systemctl daemon-reload
  say "the daemon stays; [web] in $CONF_DIR/config.toml is left as it is"
  exit 0
fi
if [ "$MODE" = uninstall ] && [ "$RECORDER" = 1 ]; then
  do_uninstall_recorder
  systemd_running && systemctl daemon-reload
  exit 0
fi
if [ "$MODE" = uninstall ]; then
  do_uninstall
  exit 0
fi

# ---------------------------------------------------------------------------- inputs
# Everything comes either from the source tree this script lives in, or from a bundle.
if [ -n "$OFFLINE" ]; then
  BUNDLE=$(cd "$OFFLINE" && pwd) || die "--offline $OFFLINE: not a directory"
  WHEELS=$BUNDLE/wheels
  UNIT_SRC=$BUNDLE/$UNIT_NAME
  CONFIG_SRC=$BUNDLE/config.example.toml
  compgen -G "$WHEELS/emotion_edge-*.whl" >/dev/null \
    || die "--offline $BUNDLE: no wheels/emotion_edge-*.whl (make it with make-bundle.sh)"
  if [ -f "$BUNDLE/SHA256SUMS" ]; then
    (cd "$BUNDLE" && sha256sum --quiet -c SHA256SUMS) || die "bundle checksum mismatch"
  fi
  APT=0
else
  SRC_TREE=$(cd "$HERE/.." && pwd)
  [ -f "$SRC_TREE/pyproject.toml" ] && [ -d "$SRC_TREE/device" ] \
    || die "$SRC_TREE is not an emotion-edge source tree; use --offline BUNDLE_DIR"
  UNIT_SRC=$HERE/$UNIT_NAME
  CONFIG_SRC=$SRC_TREE/device/config.example.toml
fi
[ -f "$UNIT_SRC" ] || die "$UNIT_SRC missing"
KIOSK_SRC=$HERE/$KIOSK_UNIT
if [ "$KIOSK" = 1 ] && [ ! -f "$KIOSK_SRC" ]; then
  die "--kiosk: $KIOSK_SRC missing (a bundle needs it beside install.sh)"
fi
RECORD_UNIT_SRC=$HERE/$RECORD_UNIT
MOSQ_CONF_SRC=$HERE/mosquitto-recorder.conf
RECORD_MQTT_HOST=${MQTT_HOST:-localhost}
LOCAL_BROKER=0
case "$RECORD_MQTT_HOST" in localhost|127.0.0.1|::1) LOCAL_BROKER=1 ;; esac
if [ "$RECORDER" = 1 ]; then
  for f in "$RECORD_UNIT_SRC" "$MOSQ_CONF_SRC"; do
    [ -f "$f" ] || die "--recorder: $f missing (a bundle needs it beside install.sh)"
  done
fi
[ -f "$CONFIG_SRC" ] || die "$CONFIG_SRC missing"
if [ -n "$MODEL" ]; then
  [ -f "$MODEL" ] || die "--model $MODEL: no such file"
  [ -f "${MODEL%.tflite}.json" ] || die "--model: sidecar ${MODEL%.tflite}.json missing"
fi

# ---------------------------------------------------------------------------- apt
PACKAGES=(python3 python3-venv)
RPI=0
if is_raspberry_pi_os; then RPI=1; PACKAGES+=(python3-picamera2); fi
# The kiosk browser: Debian and newer Raspberry Pi OS call it chromium, older Raspberry Pi OS
# chromium-browser; whichever is installed, else whichever apt offers.
kiosk_browser_pkg() {
  local p
  for p in chromium chromium-browser; do installed "$p" && { echo "$p"; return; }; done
  if apt-cache policy chromium 2>/dev/null | grep -q 'Candidate: [0-9]'; then
    echo chromium
  else
    echo chromium-browser
  fi
}
if [ "$KIOSK" = 1 ]; then PACKAGES+=(cage "$(kiosk_browser_pkg)" fonts-dejavu-core); fi
if [ "$RECORDER" = 1 ] && [ "$LOCAL_BROKER" = 1 ]; then PACKAGES+=(mosquitto mosquitto-clients); fi
missing=()
for p in "${PACKAGES[@]}"; do installed "$p" || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  [ "$APT" = 1 ] || die "missing apt packages: ${missing[*]} (apt-get install them first;" \
    "an offline install cannot fetch them)"
  say "apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
PY_VER=$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')
python3 -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
  || die "python3 is $PY_VER; emotion-edge needs >= 3.10 (Debian 12 / Ubuntu 22.04 or newer)"

# ---------------------------------------------------------------------------- venv
# A venv built for another Python (after a distribution upgrade) is rebuilt, not patched.
if [ -x "$PREFIX/bin/python" ]; then
  venv_ver=$("$PREFIX/bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])' \
    2>/dev/null || echo broken)
  if [ "$venv_ver" != "$PY_VER" ]; then
    say "venv $PREFIX is for Python $venv_ver, system has $PY_VER: rebuilding it"
    rm -rf "$PREFIX"
  fi
fi
if [ ! -x "$PREFIX/bin/python" ]; then
  say "creating venv $PREFIX (--system-site-packages)"
  python3 -m venv --system-site-packages "$PREFIX"
else
  say "upgrading venv $PREFIX"
fi

PIP=("$PREFIX/bin/python" -m pip --disable-pip-version-check --no-input -q)
EXTRAS=device
[ "$RECORDER" = 1 ] && EXTRAS=device,record
CONSTRAINTS=()
if [ "$RPI" = 1 ]; then
  # picamera2's apt dependencies (simplejpeg, python3-av) are built against Debian's NumPy
  # 1.x; a NumPy 2 in the venv would shadow it and break `import picamera2`. OpenCV >= 4.12
  # wheels require NumPy 2, so stay below it.
  printf '%s\n' 'numpy<2' 'opencv-python-headless<4.12' >"$PREFIX/constraints.txt"
  CONSTRAINTS=(-c "$PREFIX/constraints.txt")
fi
if [ -n "$OFFLINE" ]; then
  WHEEL=$(ls -1 "$WHEELS"/emotion_edge-*.whl | sort -V | tail -n1)
  say "pip install $(basename "$WHEEL")[$EXTRAS] from $WHEELS (offline)"
  "${PIP[@]}" install --no-index --find-links "$WHEELS" "${CONSTRAINTS[@]}" \
    --upgrade "${WHEEL}[$EXTRAS]"
  # Same version number, new build (e.g. a fixed bundle): replace the package itself too.
  "${PIP[@]}" install --no-index --no-deps --force-reinstall "$WHEEL"
else
  # Build from a copy: setuptools writes build/ and *.egg-info where it builds, and a
  # root-owned build/ in the user's checkout would get in their way.
  build_dir=$(mktemp -d)
  trap 'rm -rf "$build_dir"' EXIT
  tar -C "$SRC_TREE" --exclude=./.git --exclude=./.venv --exclude=./runs --exclude=./build \
    --exclude='*.egg-info' --exclude=__pycache__ -cf - . | tar -C "$build_dir" -xf -
  say "pip install ${SRC_TREE}[$EXTRAS] (from PyPI)"
  "${PIP[@]}" install "${CONSTRAINTS[@]}" --upgrade "${build_dir}[$EXTRAS]"
  "${PIP[@]}" install --no-deps --force-reinstall "$build_dir"
fi
[ -x "$PREFIX/bin/emotion-edge" ] || die "$PREFIX/bin/emotion-edge missing after pip install"
VERSION=$("$PREFIX/bin/emotion-edge" --version 2>&1 | awk '{print $NF}')

# ---------------------------------------------------------------------------- recorder host
# split_db_url URL: prints the URL without its password, then the (percent-decoded) password
# on a second line; the password goes to the env file as PGPASSWORD, never on a command line.
split_db_url() {
  local url=$1 re='^(postgres(ql)?://)([^:@/]+):([^@/]*)@(.*)$'
  if [[ "$url" =~ $re ]]; then
    printf '%s\n' "${BASH_REMATCH[1]}${BASH_REMATCH[3]}@${BASH_REMATCH[5]}"
    printf '%b\n' "${BASH_REMATCH[4]//%/\\x}"
  else
    printf '%s\n\n' "$url"
  fi
}
# env_value FILE KEY: the value of KEY=... in an env file we wrote ("" when absent).
env_value() { [ -f "$1" ] && sed -n "s/^$2=//p" "$1" | tail -n1 || true; }
# sq VALUE: single-quoted for a systemd EnvironmentFile (which has no escape inside '...').
sq() {
  case "$1" in *"'"*) die "a value for $RECORD_ENV may not contain a single quote" ;; esac
  printf "'%s'" "$1"
}

do_recorder() {
  local db pgpw mqtt_pw args tmp
  install -d -m 0755 "$CONF_DIR"
  if [ -f "$RECORD_ENV" ] && [ -z "$RECORD_DB" ]; then
    say "kept $RECORD_ENV (give --db to change the database)"
  else
    { read -r db; read -r pgpw; } < <(split_db_url "${RECORD_DB:-$RECORD_DB_DEFAULT}")
    mqtt_pw=$(env_value "$RECORD_ENV" EMOTION_EDGE_MQTT_PASSWORD)
    mqtt_pw=${mqtt_pw#\'}; mqtt_pw=${mqtt_pw%\'}
    [ -n "$mqtt_pw" ] || mqtt_pw=$(head -c 24 /dev/urandom | base64 | tr -d '/+=')
    args="--username $RECORD_MQTT_USER"
    tmp=$(mktemp)
    chmod 0600 "$tmp"
    {
      echo "# written by install.sh --recorder; secrets: root only (0600)"
      echo "EMOTION_EDGE_RECORD_DB=$(sq "$db")"
      echo "EMOTION_EDGE_RECORD_MQTT_HOST=$(sq "$RECORD_MQTT_HOST")"
      echo "EMOTION_EDGE_RECORD_ARGS=$(sq "$args")"
      echo "EMOTION_EDGE_MQTT_PASSWORD=$(sq "$mqtt_pw")"
      [ -z "$pgpw" ] || echo "PGPASSWORD=$(sq "$pgpw")"
    } >"$tmp"
    [ -f "$RECORD_ENV" ] && cp -p "$RECORD_ENV" "$RECORD_ENV.bak"
    install -m 0600 "$tmp" "$RECORD_ENV"
    rm -f "$tmp"
    say "wrote $RECORD_ENV (database $db, broker $RECORD_MQTT_HOST)"
  fi
  if [ "$LOCAL_BROKER" = 1 ]; then
    install -D -m 0644 "$MOSQ_CONF_SRC" "$MOSQ_DROPIN"
    mqtt_pw=$(env_value "$RECORD_ENV" EMOTION_EDGE_MQTT_PASSWORD)
    mqtt_pw=${mqtt_pw#\'}; mqtt_pw=${mqtt_pw%\'}
    [ -f "$MOSQ_PASSWD" ] || install -m 0640 /dev/null "$MOSQ_PASSWD"
    # the password through stdin: mosquitto_passwd -b would show it in `ps`
    printf '%s\n%s\n' "$mqtt_pw" "$mqtt_pw" \
      | mosquitto_passwd "$MOSQ_PASSWD" "$RECORD_MQTT_USER" >/dev/null
    getent group mosquitto >/dev/null && chgrp mosquitto "$MOSQ_PASSWD"
    chmod 0640 "$MOSQ_PASSWD"
    say "mosquitto: $MOSQ_DROPIN (persistence, queues), user $RECORD_MQTT_USER in $MOSQ_PASSWD;" \
      "add one user per device: mosquitto_passwd $MOSQ_PASSWD DEVICE"
  fi
  tmp=$(mktemp)
  sed "s#/opt/emotion-edge/bin/#$PREFIX/bin/#" "$RECORD_UNIT_SRC" >"$tmp"
  install -D -m 0644 "$tmp" "$UNIT_DIR/$RECORD_UNIT"
  rm -f "$tmp"
  say "installed $UNIT_DIR/$RECORD_UNIT"
  if ! have_systemctl; then
    say "no systemctl here: the units are installed but not enabled"
    return
  fi
  systemctl enable "$RECORD_UNIT" >/dev/null 2>&1 || systemctl enable "$RECORD_UNIT"
  if ! systemd_running; then
    say "systemd is not running (chroot/container?): enabled, starts at next boot"
    return
  fi
  systemctl daemon-reload
  if [ "$LOCAL_BROKER" = 1 ]; then
    systemctl enable mosquitto >/dev/null 2>&1 || true
    # a new listener needs a restart, not a reload
    systemctl restart mosquitto || die "mosquitto did not start: journalctl -u mosquitto"
  fi
  if [ "$START" = 0 ]; then
    say "enabled; start it with: systemctl start emotion-edge-record"
    return
  fi
  systemctl restart "$RECORD_UNIT"
  sleep 3
  if ! systemctl is-active --quiet "$RECORD_UNIT"; then
    journalctl -u "$RECORD_UNIT" -n 20 --no-pager >&2 || true
    die "$RECORD_UNIT did not stay up (journal above)"
  fi
  say "recording. Check: systemctl status emotion-edge-record; journalctl -u emotion-edge-record -f"
}

if [ "$RECORDER" = 1 ]; then
  printf 'version=%s\ninstalled=%s\nfrom=%s\n' "$VERSION" "$(date -u +%FT%TZ)" \
    "${OFFLINE:+bundle }${BUNDLE:-$SRC_TREE}" >"$PREFIX/INSTALL-INFO"
  do_recorder
  exit 0
fi

# ---------------------------------------------------------------------------- config
# set_key FILE TABLE KEY VALUE: replace `KEY = ...` inside [TABLE] (the example lists every key).
set_key() {
  local tmp
  tmp=$(mktemp)
  awk -v table="[$2]" -v key="$3" -v val="$4" '
    /^\[/ { in_t = ($0 == table) }
    in_t && !done && $0 ~ "^" key " *=" { print key " = " val; done = 1; next }
    { print }
    END { if (!done) exit 3 }' "$1" >"$tmp" || { rm -f "$tmp"; die "cannot set $2.$3 in $1"; }
  cat "$tmp" >"$1"
  rm -f "$tmp"
}
toml_str() { local s=${1//\\/\\\\}; printf '"%s"' "${s//\"/\\\"}"; }

install -d -m 0755 "$CONF_DIR" "$CONF_DIR/models"
CONFIG=$CONF_DIR/config.toml
if [ ! -e "$CONFIG" ]; then
  tmp_cfg=$(mktemp)
  cp "$CONFIG_SRC" "$tmp_cfg"
  if [ -z "$SRC_SPEC" ]; then
    if [ "$RPI" = 1 ] || "$PREFIX/bin/python" -c 'import picamera2' 2>/dev/null; then
      SRC_SPEC=picamera2
    else
      SRC_SPEC=opencv:/dev/video0
    fi
  fi
  set_key "$tmp_cfg" source kind "$(toml_str "${SRC_SPEC%%:*}")"
  [[ "$SRC_SPEC" == *:* ]] && set_key "$tmp_cfg" source uri "$(toml_str "${SRC_SPEC#*:}")"
  if [ -n "$MQTT_HOST" ]; then
    set_key "$tmp_cfg" output mode '"mqtt"'
    set_key "$tmp_cfg" mqtt enabled true
    set_key "$tmp_cfg" mqtt host "$(toml_str "$MQTT_HOST")"
  fi
  install -m 0644 "$tmp_cfg" "$CONFIG"
  rm -f "$tmp_cfg"
  say "wrote $CONFIG (source $SRC_SPEC${MQTT_HOST:+, MQTT broker $MQTT_HOST})"
else
  say "kept $CONFIG"
  if [ -n "$SRC_SPEC$MQTT_HOST" ]; then
    warn "--source/--mqtt-host only apply to a new config; edit $CONFIG instead"
  fi
fi

if [ -n "$MODEL" ]; then
  name=$(basename "$MODEL" .tflite)
  if [ "$(cd "$(dirname "$MODEL")" && pwd)" != "$CONF_DIR/models" ]; then
    install -m 0644 "$MODEL" "$CONF_DIR/models/$name.tflite"
    install -m 0644 "${MODEL%.tflite}.json" "$CONF_DIR/models/$name.json"
  fi
  cp -p "$CONFIG" "$CONFIG.bak"
  set_key "$CONFIG" classifier model_path "$(toml_str "$CONF_DIR/models/$name.tflite")"
  say "model: $CONF_DIR/models/$name.tflite (previous config in $CONFIG.bak)"
fi

# upsert_key FILE TABLE KEY VALUE: like set_key, adding the key (or the table) when missing
# (a config written before that key existed).
upsert_key() {
  local tmp
  tmp=$(mktemp)
  awk -v table="[$2]" -v key="$3" -v val="$4" '
    # blank lines are held back, so a key added at the end of a table goes before them
    /^[[:space:]]*$/ { blanks = blanks $0 "\n"; next }
    /^\[/ {
      if (in_t && !done) { print key " = " val; done = 1 }
      printf "%s", blanks; blanks = ""
      in_t = ($0 == table); if (in_t) seen = 1
      print; next
    }
    { printf "%s", blanks; blanks = "" }
    in_t && !done && $0 ~ "^" key " *=" { print key " = " val; done = 1; next }
    { print }
    END {
      if (in_t && !done) print key " = " val
      printf "%s", blanks
      if (!seen) { print ""; print table; print key " = " val }
    }' "$1" >"$tmp" || { rm -f "$tmp"; die "cannot set $2.$3 in $1"; }
  cat "$tmp" >"$1"
  rm -f "$tmp"
}

if [ "$KIOSK" = 1 ]; then
  # The kiosk shows the local page: [web] on, and on loopback only (faces stay on the device).
  cp -p "$CONFIG" "$CONFIG.bak"
  upsert_key "$CONFIG" web enabled true
  upsert_key "$CONFIG" web host '"127.0.0.1"'
  upsert_key "$CONFIG" web allow_remote false
  say "kiosk: [web] enabled on 127.0.0.1 in $CONFIG (previous config in $CONFIG.bak)"
fi

# The config must load before the unit is (re)started: a typo is reported here, not in a
# restart loop. (--print-config validates every key without opening camera or model.)
if ! "$PREFIX/bin/emotion-edge" --config "$CONFIG" --print-config >/dev/null; then
  die "$CONFIG does not validate (message above); fix it and re-run"
fi

# ---------------------------------------------------------------------------- unit
tmp_unit=$(mktemp)
sed "s#/opt/emotion-edge/bin/emotion-edge#$PREFIX/bin/emotion-edge#" "$UNIT_SRC" >"$tmp_unit"
install -D -m 0644 "$tmp_unit" "$UNIT_DIR/$UNIT_NAME"
rm -f "$tmp_unit"
# GPU render nodes belong to "render" where that group exists (Pi 5, Jetson, x86);
# SupplementaryGroups= with an unknown group would stop the unit from starting.
if getent group render >/dev/null; then
  install -d -m 0755 "$DROPIN_DIR"
  printf '%s\n' "# written by install.sh: the render group exists on this device" \
    "[Service]" "SupplementaryGroups=render" >"$DROPIN"
else
  rm -f "$DROPIN"
  rmdir "$DROPIN_DIR" 2>/dev/null || true
fi
if [ "$KIOSK" = 1 ]; then
  BROWSER=$(command -v chromium || command -v chromium-browser || true)
  [ -n "$BROWSER" ] || die "--kiosk: no chromium or chromium-browser binary after apt"
  command -v cage >/dev/null || die "--kiosk: cage missing after apt"
  if ! getent passwd "$KIOSK_USER" >/dev/null; then
    useradd --system --user-group --no-create-home --home-dir /run/emotion-edge-kiosk \
      --shell /usr/sbin/nologin --comment "emotion-edge kiosk screen" "$KIOSK_USER"
  fi
  # display, GPU and touch devices (logind also grants them to the seat's session)
  for g in video render input; do
    getent group "$g" >/dev/null && usermod -a -G "$g" "$KIOSK_USER"
  done
  WEB_PORT=$("$PREFIX/bin/python" -c \
    'import sys; from emotion_edge.config import load_config; print(load_config(sys.argv[1]).web.port)' \
    "$CONFIG")
  printf '%s\n' "# written by install.sh --kiosk: the page the kiosk shows, and its browser" \
    "KIOSK_URL=http://127.0.0.1:$WEB_PORT/" "KIOSK_BROWSER=$BROWSER" >"$KIOSK_ENV"
  chmod 0644 "$KIOSK_ENV"
  tmp_unit=$(mktemp)
  sed "s#/opt/emotion-edge/bin/#$PREFIX/bin/#" "$KIOSK_SRC" >"$tmp_unit"
  install -D -m 0644 "$tmp_unit" "$UNIT_DIR/$KIOSK_UNIT"
  rm -f "$tmp_unit"
  say "kiosk: $UNIT_DIR/$KIOSK_UNIT shows http://127.0.0.1:$WEB_PORT/ with $BROWSER on tty1"
fi
printf 'version=%s\ninstalled=%s\nfrom=%s\n' "$VERSION" "$(date -u +%FT%TZ)" \
  "${OFFLINE:+bundle }${BUNDLE:-$SRC_TREE}" >"$PREFIX/INSTALL-INFO"
say "installed emotion-edge $VERSION: $PREFIX, $UNIT_DIR/$UNIT_NAME"

if ! have_systemctl; then
  say "no systemctl here: the unit is installed but not enabled"
  exit 0
fi
# `systemctl enable` only writes symlinks, so it also works in a chroot or image build.
systemctl enable "$UNIT_NAME" >/dev/null 2>&1 || systemctl enable "$UNIT_NAME"
if [ "$KIOSK" = 1 ]; then
  systemctl enable "$KIOSK_UNIT" >/dev/null 2>&1 || systemctl enable "$KIOSK_UNIT"
  # tty1 belongs to the kiosk now (Conflicts= in the unit; at boot both would be wanted)
  systemctl disable getty@tty1.service >/dev/null 2>&1 || true
fi
if ! systemd_running; then
  say "systemd is not running (chroot/container?): enabled, starts at next boot"
  exit 0
fi
systemctl daemon-reload
if [ "$START" = 0 ]; then
  say "enabled; start it with: systemctl start emotion-edge"
  exit 0
fi
say "restarting $UNIT_NAME"
# Type=notify: this returns once the daemon reported READY=1 (or failed).
if ! systemctl restart "$UNIT_NAME"; then
  journalctl -u "$UNIT_NAME" -n 20 --no-pager >&2 || true
  die "$UNIT_NAME did not start (journal above)"
fi
if [ "$KIOSK" = 1 ]; then
  say "restarting $KIOSK_UNIT"
  systemctl restart "$KIOSK_UNIT" || warn "$KIOSK_UNIT did not start: journalctl -u $KIOSK_UNIT"
fi
say "running. Check: systemctl status emotion-edge; journalctl -u emotion-edge -f"
