#!/usr/bin/env bash
# Builds the User-Mode Linux kernel that scripts/uml.sh boots, or reuses a cached one.
#
#   bash scripts/uml/build.sh        prints the path of the kernel binary on stdout
#
# Linux 6.1 from Debian's linux-source-6.1, built as ARCH=um, starting from the config of
# Debian's user-mode-linux package with config.fragment (beside this file) applied over it:
# InfiniBand, userspace verbs, rdma_rxe and siw built in (scripts/README.md says why each
# line is there). 8-25 minutes on 2 cores (8 measured here), once: the binary is cached under
# <cache>/linux-<key>, where key hashes config.fragment, the recipe number (RECIPE below)
# and the two Debian package versions. The build runs under `nice -n 10`.
#
# Environment:
#   RDMA_UML_CACHE   cache directory (default: <repo>/.cache/uml)
#   RDMA_UML_JOBS    make -j (default: the number of CPUs)
#   RDMA_UML_QUIET=1 no "uml:" progress lines on stderr
set -euo pipefail

SELF=$(readlink -f "${BASH_SOURCE[0]}")
HERE=$(dirname "$SELF")
ROOT=$(cd "$HERE/../.." && pwd -P)
FRAGMENT=$HERE/config.fragment
PACKAGES=(make gcc libc6-dev flex bison bc xz-utils)

say() { [ "${RDMA_UML_QUIET:-}" = 1 ] || echo "uml: $*" >&2; }
die() { echo "uml: error: $*" >&2; exit 2; }
as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"
  elif command -v sudo >/dev/null; then sudo "$@"
  else die "need root or sudo to run: $*"
  fi
}

CACHE=${RDMA_UML_CACHE:-$ROOT/.cache/uml}
mkdir -p "$CACHE"
CACHE=$(cd "$CACHE" && pwd -P)
JOBS=${RDMA_UML_JOBS:-$(nproc)}
[[ $JOBS =~ ^[1-9][0-9]*$ ]] || die "RDMA_UML_JOBS must be a positive number: got '$JOBS'"
[ -f "$FRAGMENT" ] || die "missing $FRAGMENT"

exec 7>>"$CACHE/.build.lock"
if ! flock -n 7; then
  say "another build is running in $CACHE; waiting for it"
  flock 7
fi

APT_UPDATED=0
apt_update() {
  [ $APT_UPDATED = 1 ] && return 0
  as_root apt-get update -qq >&2 || say "apt-get update failed; trying with the lists there are"
  APT_UPDATED=1
}
candidate() { apt-cache policy "$1" 2>/dev/null | awk '$1 == "Candidate:" && $2 != "(none)" { print $2; exit }'; }

SRC_VER=${RDMA_UML_SOURCE_VERSION:-$(candidate linux-source-6.1)}
UML_VER=$(candidate user-mode-linux)
if [ -z "$SRC_VER" ] || [ -z "$UML_VER" ]; then
  apt_update
  SRC_VER=${RDMA_UML_SOURCE_VERSION:-$(candidate linux-source-6.1)}
  UML_VER=$(candidate user-mode-linux)
fi
# No package lists at all: reuse the newest kernel already built, if any.
if [ -z "$SRC_VER" ] || [ -z "$UML_VER" ]; then
  last=$(cd "$CACHE" && ls -t 2>/dev/null | grep -E '^linux-[0-9a-f]{16}$' | head -1 || true)
  [ -n "$last" ] && last=$CACHE/$last
  [ -n "$last" ] && { say "apt knows no linux-source-6.1 / user-mode-linux; reusing $last"; echo "$last"; exit 0; }
  die "apt-cache knows no linux-source-6.1 or user-mode-linux (Debian bookworm packages)"
fi

# Bump RECIPE when a change to the steps below changes the binary they make.
RECIPE=1
KEY=$( (sha256sum "$FRAGMENT" | cut -d' ' -f1; echo "recipe $RECIPE $SRC_VER $UML_VER") | sha256sum | cut -c1-16)
BIN=$CACHE/linux-$KEY
if [ -x "$BIN" ]; then
  echo "$BIN"
  exit 0
fi

missing=()
for p in "${PACKAGES[@]}"; do
  [ "$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null)" = installed ] || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing ${missing[*]}"
  apt_update
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q -o DPkg::Lock::Timeout=240 \
    --no-install-recommends "${missing[@]}" >&2 || die "apt-get install ${missing[*]} failed"
fi

say "building Linux $SRC_VER as ARCH=um (key $KEY; 8-25 min on 2 cores, once)"
t0=$SECONDS
W=$CACHE/build-$KEY
rm -rf "$W"
mkdir -p "$W/deb"
(cd "$W/deb" && apt-get download -q "linux-source-6.1=$SRC_VER" "user-mode-linux=$UML_VER" 2>&1 \
  | grep -v 'unsandboxed as root' >&2 || true)
ls "$W"/deb/linux-source-6.1_*.deb >/dev/null 2>&1 || die "apt-get download linux-source-6.1=$SRC_VER failed"
ls "$W"/deb/user-mode-linux_*.deb >/dev/null 2>&1 || die "apt-get download user-mode-linux=$UML_VER failed"
dpkg -x "$W"/deb/linux-source-6.1_*.deb "$W/src"
dpkg -x "$W"/deb/user-mode-linux_*.deb "$W/uml"
tarball=$(ls "$W"/src/usr/src/linux-source-6.1*.tar.xz | head -1)
tar -C "$W" -xf "$tarball"
rm -rf "$W/deb" "$W/src"
TREE=$(ls -d "$W"/linux-source-6.1* | head -1)
[ -f "$TREE/Makefile" ] || die "no kernel tree unpacked from $tarball"
base=$(find "$W/uml" -name 'config.gz' | head -1)
[ -n "$base" ] || die "user-mode-linux=$UML_VER has no config.gz"
# Base config without modules, then the fragment's lines (later lines win in Kconfig).
zcat "$base" | grep -v '=m$' > "$TREE/.config"
grep -E '^(CONFIG_|# CONFIG_)' "$FRAGMENT" >> "$TREE/.config"
cd "$TREE"
make ARCH=um olddefconfig >&2
# Every line of the fragment must have survived olddefconfig (a dependency it lacks drops it).
while read -r line; do
  case $line in
    CONFIG_*=*) grep -qxF "$line" .config || die "olddefconfig dropped '$line' (a missing dependency)" ;;
    "# CONFIG_"*" is not set") opt=${line#\# }; opt=${opt%% *}
      ! grep -q "^$opt=" .config || die "olddefconfig turned on $opt, which config.fragment turns off" ;;
  esac
done < <(grep -E '^(CONFIG_|# CONFIG_)' "$FRAGMENT")
nice -n 10 make ARCH=um -j"$JOBS" linux > "$W/make.log" 2>&1 || { tail -40 "$W/make.log" >&2; die "make ARCH=um linux failed (log: $W/make.log)"; }
cp .config "$BIN.config"
cp linux "$BIN.tmp"
mv "$BIN.tmp" "$BIN"
cd "$CACHE"
rm -rf "$W"
say "built $BIN in $((SECONDS - t0))s"
echo "$BIN"
