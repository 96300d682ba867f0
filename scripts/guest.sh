#!/usr/bin/env bash
# Runs a command inside a QEMU guest that has real Soft-RoCE (see scripts/README.md).
#
#   bash scripts/guest.sh <command…>     (or: npm run guest -- <command…>)
#   bash scripts/guest.sh --prepare      install and cache everything, boot nothing
#   bash scripts/guest.sh --wait-active <state file> <seconds>
#                                        (stage 2 in the guest runs this for rxe0: exit 1 with
#                                        the last state seen unless it reads "4: ACTIVE" in time)
#
# The guest boots Debian's 6.1 kernel under software emulation (TCG: /dev/kvm refuses
# ordinary guests on these machines), sees the host's whole filesystem read-only under a
# RAM layer (it may write anywhere; nothing reaches the host, and a checkout under /tmp is
# visible), loads rdma_rxe and rdma_ucm, puts 192.0.2.1/24 on a dummy interface d0, adds
# rxe0 on it and runs the command in the same directory with `ulimit -l unlimited` and
# node_modules/.bin on PATH. The command's stdout and stderr stream back live; the exit
# status is the command's. The guest has no network device: nothing leaves it.
#
# Steps:
#   1. Take the cache lock (flock); step 5 takes the machine-wide boot lock: one guest at a
#      time on this 2-core machine.
#   2. Install missing Debian packages (apt-get; sudo only when not root).
#   3. Fetch Debian's kernel WITHOUT installing it: apt-get download + dpkg -x into the
#      cache, then depmod there. The guest links /lib/modules/<kver> to that tree.
#   4. Build (or reuse) a tiny initramfs: static busybox + the virtio/9p/overlay modules,
#      cached under a key of kernel version + a hash of this script.
#   5. Boot; the guest writes stdout, stderr and the exit status into a writable 9p share.
#
# Environment:
#   RDMA_GUEST_CACHE    cache directory (default: <repo>/.cache/guest)
#   RDMA_GUEST_TIMEOUT  limit for one guest run, as for timeout(1): 2400, 40m, 1h (default 40m:
#                       about twice the longest guest command here, npm test's guest phase,
#                       measured at 19 min; scripts/test.sh passes its own 24m)
#   RDMA_GUEST_ACTIVE_TIMEOUT  seconds for rxe0 to become ACTIVE after it is added (default 5;
#                       measured 0.14-0.17 s); otherwise the run fails with exit status 97
#   GUEST_MEM           guest memory in MB (default 3072)
#   GUEST_SMP           guest CPUs (default 2)
#   RDMA_GUEST_LOCK     lock file (default /tmp/rdma-guest.lock)
#   RDMA_GUEST_ENV      extra variable names to pass into the guest, space separated
#   RDMA_GUEST_QUIET=1  no "guest:" progress lines on stderr
# Passed into the guest: every variable named RDMA_*, SDP_*, BENCH_*, plus CI, NO_COLOR,
# FORCE_COLOR, TERM, LANG, LC_ALL, TZ, HOME and those in RDMA_GUEST_ENV. Inside the guest
# RDMA_IN_GUEST=1 is set, and this script then just runs the command (no nested guests).
set -euo pipefail

SELF=$(readlink -f "${BASH_SOURCE[0]}")
ROOT=$(cd "$(dirname "$SELF")/.." && pwd -P)
PACKAGES=(qemu-system-x86 busybox-static cpio kmod iproute2 rdma-core ibverbs-providers
  libibverbs-dev librdmacm-dev rdmacm-utils perftest ibverbs-utils)
# Loaded in this order by the initramfs (paths under lib/modules/<kver>/kernel, no .ko).
INITRD_MODULES=(drivers/virtio/virtio_ring drivers/virtio/virtio drivers/virtio/virtio_pci_legacy_dev
  drivers/virtio/virtio_pci_modern_dev drivers/virtio/virtio_pci fs/netfs/netfs fs/fscache/fscache
  net/9p/9pnet net/9p/9pnet_virtio fs/9p/9p fs/overlayfs/overlay)

say() { [ "${RDMA_GUEST_QUIET:-}" = 1 ] || echo "guest: $*" >&2; }
die() { echo "guest: error: $*" >&2; exit 2; }

usage() {
  awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$SELF" >&2
}

# Waits until an RDMA port's sysfs state file reads "4: ACTIVE"; exits 1 with the last state
# seen when it does not within the bound (seconds). The guest's stage 2 runs this for rxe0
# (the guest sees this script through its read-only view of the host's /).
wait_active() { # state-file seconds
  local file=$1 bound=$2 state= t0 now
  [[ $bound =~ ^[0-9]+(\.[0-9]+)?$ ]] || { echo "guest: error: --wait-active bound must be seconds: got '$bound'" >&2; exit 2; }
  t0=$(date +%s%N)
  while :; do
    state=$(cat "$file" 2>/dev/null || echo "missing ($file)")
    now=$(date +%s%N)
    if [ "$state" = "4: ACTIVE" ]; then
      echo "rxe0 port 1: $state after $(( (now - t0) / 1000000 )) ms"
      exit 0
    fi
    if [ $(( (now - t0) / 1000000 )) -ge "$(awk -v b="$bound" 'BEGIN { printf "%d", b * 1000 }')" ]; then
      echo "guest: error: rxe0 port 1 never became ACTIVE within ${bound}s (RDMA_GUEST_ACTIVE_TIMEOUT); last state: $state" >&2
      exit 1
    fi
    sleep 0.05
  done
}
if [ "${1:-}" = --wait-active ]; then
  [ $# = 3 ] || { echo "usage: guest.sh --wait-active <state file> <seconds>" >&2; exit 2; }
  wait_active "$2" "$3"
fi

# ---------------------------------------------------------------- inside the guest already
if [ "${RDMA_IN_GUEST:-}" = 1 ]; then
  [ $# -gt 0 ] || { usage; exit 2; }
  [ "$1" = --prepare ] && exit 0
  exec "$@"
fi

PREPARE_ONLY=0
case "${1:-}" in
  "" | -h | --help) usage; exit 2 ;;
  --prepare) PREPARE_ONLY=1; shift ;;
  --) shift ;;
esac

CACHE=${RDMA_GUEST_CACHE:-$ROOT/.cache/guest}
mkdir -p "$CACHE"
CACHE=$(cd "$CACHE" && pwd -P)
TIMEOUT=${RDMA_GUEST_TIMEOUT:-40m}
[[ $TIMEOUT =~ ^[0-9]+(\.[0-9]+)?[smhd]?$ ]] || die "RDMA_GUEST_TIMEOUT must look like 2400, 40m or 1h: got '$TIMEOUT'"
MEM=${GUEST_MEM:-3072}
[[ $MEM =~ ^[0-9]+$ ]] || die "GUEST_MEM must be a number of MB: got '$MEM'"
SMP=${GUEST_SMP:-2}
# rxe0 turned ACTIVE 137 and 166 ms after `rdma link add` in two boots (TCG, host loaded);
# 5 s is 30 times that, and still small beside the boot itself (10-28 s).
ACTIVE_BOUND=${RDMA_GUEST_ACTIVE_TIMEOUT:-5}
[[ $ACTIVE_BOUND =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "RDMA_GUEST_ACTIVE_TIMEOUT must be seconds: got '$ACTIVE_BOUND'"
[[ $SMP =~ ^[0-9]+$ ]] || die "GUEST_SMP must be a number: got '$SMP'"

# npm runs scripts in the package root; INIT_CWD is where the user typed the command.
CWD=$PWD
if [ -n "${npm_lifecycle_event:-}" ] && [ -n "${INIT_CWD:-}" ] && [ -d "$INIT_CWD" ]; then CWD=$INIT_CWD; fi

# ---------------------------------------------------------------- 1. locks
# The cache lock covers steps 2-4 (one preparer per cache); the boot lock covers step 5
# (one guest at a time on this machine, whoever runs it and from whichever checkout).
exec 8>>"$CACHE/.lock"
if ! flock -n 8; then
  say "another run is preparing $CACHE; waiting for it"
  flock 8
fi

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"
  elif command -v sudo >/dev/null; then sudo "$@"
  else die "need root or sudo to run: $*"
  fi
}

# ---------------------------------------------------------------- 2. packages
missing=()
command -v dpkg-query >/dev/null || die "this script needs a Debian-like host (dpkg, apt-get)"
for p in "${PACKAGES[@]}"; do
  [ "$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null)" = installed ] || missing+=("$p")
done
# dpkg lock wait (Lock::Timeout): installing two packages here took 19 s, so a lock held for
# 4 minutes belongs to another apt run (an unattended upgrade) that is not about to finish.
APT_UPDATED=0
apt_update() {
  [ $APT_UPDATED = 1 ] && return 0
  as_root apt-get update -qq >&2 || say "apt-get update failed; trying with the lists there are"
  APT_UPDATED=1
}
if [ ${#missing[@]} -gt 0 ]; then
  say "installing ${missing[*]}"
  t0=$SECONDS
  apt_update
  ilog=$(mktemp)
  if ! as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q -o DPkg::Lock::Timeout=240 --no-install-recommends "${missing[@]}" >"$ilog" 2>&1; then
    tail -30 "$ilog" >&2; rm -f "$ilog"
    die "apt-get install ${missing[*]} failed"
  fi
  rm -f "$ilog"
  say "installed in $((SECONDS - t0))s"
fi
command -v qemu-system-x86_64 >/dev/null || die "qemu-system-x86_64 not found after install"
command -v depmod >/dev/null || PATH=$PATH:/usr/sbin:/sbin
command -v depmod >/dev/null || die "depmod not found (package kmod)"
BUSYBOX=$(dpkg -L busybox-static 2>/dev/null | grep -m1 '/bin/busybox$' || true)
[ -x "${BUSYBOX:-/nonexistent}" ] || BUSYBOX=/bin/busybox
[ -x "$BUSYBOX" ] || die "no static busybox (package busybox-static)"

# ---------------------------------------------------------------- 3. kernel
# Newest kernel already unpacked in the cache, else the one linux-image-amd64 points at.
KVER=$(ls "$CACHE/kernel" 2>/dev/null | while read -r k; do [ -f "$CACHE/kernel/$k/.ready" ] && echo "$k"; done | sort -V | tail -1 || true)
if [ -z "$KVER" ]; then
  resolve() {
    apt-cache depends linux-image-amd64 2>/dev/null \
      | awk '$1 == "Depends:" && $2 ~ /^linux-image-[0-9].*-amd64$/ { print $2; exit }'
  }
  pkg=${RDMA_GUEST_KERNEL_PKG:-$(resolve)}
  if [ -z "$pkg" ]; then apt_update; pkg=$(resolve); fi
  [ -n "$pkg" ] || die "cannot resolve the kernel package (apt-cache depends linux-image-amd64 found nothing)"
  case $pkg in linux-image-6.1*-amd64) ;; *) say "warning: $pkg is not a 6.1 kernel; trying it anyway" ;; esac
  KVER=${pkg#linux-image-}
  say "fetching kernel $pkg into $CACHE/kernel (not installed)"
  t0=$SECONDS
  tmp=$(mktemp -d "$CACHE/.fetch.XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  (cd "$tmp" && apt-get download -q "$pkg" 2>&1 | grep -v 'unsandboxed as root' >&2 || true)
  deb=$(ls "$tmp"/*.deb 2>/dev/null | head -1 || true)
  if [ -z "$deb" ]; then
    apt_update
    (cd "$tmp" && apt-get download -q "$pkg" 2>&1 | grep -v 'unsandboxed as root' >&2 || true)
    deb=$(ls "$tmp"/*.deb 2>/dev/null | head -1 || true)
  fi
  [ -n "$deb" ] || die "apt-get download $pkg failed"
  mkdir -p "$tmp/root"
  dpkg -x "$deb" "$tmp/root"
  rm -f "$deb"
  [ -f "$tmp/root/boot/vmlinuz-$KVER" ] || die "$pkg has no /boot/vmlinuz-$KVER"
  [ -f "$tmp/root/lib/modules/$KVER/modules.dep" ] || depmod -b "$tmp/root" "$KVER"
  touch "$tmp/root/.ready"
  mkdir -p "$CACHE/kernel"
  rm -rf "${CACHE:?}/kernel/$KVER"
  mv "$tmp/root" "$CACHE/kernel/$KVER"
  rm -rf "$tmp"
  trap - EXIT
  say "kernel $KVER unpacked in $((SECONDS - t0))s"
fi
KROOT=$CACHE/kernel/$KVER
VMLINUZ=$KROOT/boot/vmlinuz-$KVER
KMODS=$KROOT/lib/modules/$KVER
[ -r "$VMLINUZ" ] || die "no kernel at $VMLINUZ (delete $CACHE and retry)"

# ---------------------------------------------------------------- 4. initramfs
HASH=$( (sha256sum "$SELF"; sha256sum "$BUSYBOX") | sha256sum | cut -c1-16)
INITRD=$CACHE/initrd-$KVER-$HASH.cpio.gz
if [ ! -f "$INITRD" ]; then
  say "building initramfs $(basename "$INITRD")"
  ir=$(mktemp -d "$CACHE/.initrd.XXXXXX")
  trap 'rm -rf "$ir"' EXIT
  mkdir -p "$ir/root"/{bin,proc,sys,dev,newroot,lower,rw,mods}
  cp "$BUSYBOX" "$ir/root/bin/busybox"
  : > "$ir/root/mods/order"
  for m in "${INITRD_MODULES[@]}"; do
    # A module missing from this kernel is built in (or gone); the init skips it.
    if [ -f "$KMODS/kernel/$m.ko" ]; then
      cp "$KMODS/kernel/$m.ko" "$ir/root/mods/"
      basename "$m" >> "$ir/root/mods/order"
    fi
  done
  cat > "$ir/root/init" <<'INIT'
#!/bin/busybox sh
# Stage 1 (PID 1 in the initramfs): host root over 9p, read-only, under a tmpfs overlay.
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
for m in $(cat /mods/order); do insmod /mods/$m.ko || echo "insmod $m failed"; done
fail() { echo "guest init: $*"; poweroff -f; }
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000,ro hostroot /lower || fail "9p root failed"
mount -t tmpfs -o mode=755 tmpfs /rw && mkdir -p /rw/upper /rw/work
mount -t overlay overlay -o lowerdir=/lower,upperdir=/rw/upper,workdir=/rw/work /newroot || fail "overlay failed"
cp /stage2 /newroot/.rdma-guest-stage2 || fail "cannot write to the overlay"
mount --move /proc /newroot/proc; mount --move /sys /newroot/sys; mount --move /dev /newroot/dev
exec switch_root /newroot /bin/bash /.rdma-guest-stage2
INIT
  cat > "$ir/root/stage2" <<'STAGE2'
# Stage 2 (PID 1, bash, on the host's root): Soft-RoCE, then the command.
out=/run/rdma-guest
off() { sync; /bin/busybox poweroff -f || echo o > /proc/sysrq-trigger; sleep 5; }
mount -t tmpfs tmpfs /run
mkdir -p "$out" && mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 out "$out" \
  || { echo "guest: output share failed"; off; }
mkdir -p /dev/pts /dev/shm && mount -t devpts devpts /dev/pts && mount -t tmpfs tmpfs /dev/shm
kver=$(uname -r)
setup() {
  set -e
  hostname rdma-guest 2>/dev/null || true
  mkdir -p /lib/modules
  ln -sfn "$(cat "$out/kmods")" "/lib/modules/$kver"
  modprobe rdma_rxe
  modprobe rdma_ucm
  modprobe dummy
  ip link set lo up
  ip link add d0 type dummy
  ip addr add 192.0.2.1/24 dev d0
  ip link set d0 up
  rdma link add rxe0 type rxe netdev d0
  bash "$(cat "$out/self")" --wait-active /sys/class/infiniband/rxe0/ports/1/state "$(cat "$out/active_bound")"
}
(setup) > "$out/setup.log" 2>&1
[ $? = 0 ] || { echo 97 > "$out/setupfail"; off; }
cut -d' ' -f1 /proc/uptime > "$out/booted"
ulimit -l unlimited
ulimit -n 65536 2>/dev/null || true
set -a; . "$out/env"; set +a
cd "$(cat "$out/cwd")" || { echo "guest: no directory $(cat "$out/cwd")" >> "$out/stderr"; echo 2 > "$out/rc"; off; }
bash -c "$(cat "$out/cmd")" >> "$out/stdout" 2>> "$out/stderr" < /dev/null
echo $? > "$out/rc"
off
STAGE2
  chmod +x "$ir/root/init"
  (cd "$ir/root" && find . | cpio -o -H newc 2>/dev/null | gzip -1) > "$ir/initrd.gz"
  # Older versions' initramfs go only when a day old: a run of another checkout may be
  # waiting for the boot lock with its own (it was built before this one, and is still needed).
  find "$CACHE" -maxdepth 1 -name 'initrd-*.cpio.gz' -mmin +1440 -delete
  mv "$ir/initrd.gz" "$INITRD"
  rm -rf "$ir"
  trap - EXIT
fi

if [ $PREPARE_ONLY = 1 ]; then
  say "ready: kernel $KVER, initramfs $(basename "$INITRD"), cache $CACHE"
  exit 0
fi
exec 8>&-

LOCK=${RDMA_GUEST_LOCK:-/tmp/rdma-guest.lock}
exec 9>>"$LOCK"
if ! flock -n 9; then
  say "another guest is running (lock $LOCK); waiting for it"
  flock 9
fi

# ---------------------------------------------------------------- 5. boot and run
OUT=$(mktemp -d "${TMPDIR:-/tmp}/rdma-guest.XXXXXX")
QPID=
TAILS=()
cleanup() {
  [ -n "$QPID" ] && kill "$QPID" 2>/dev/null || true
  for t in "${TAILS[@]}"; do kill "$t" 2>/dev/null || true; done
  rm -rf "$OUT"
}
trap cleanup EXIT
trap 'echo "guest: interrupted" >&2; exit 130' INT TERM

printf '%q ' "$@" > "$OUT/cmd"
printf '%s' "$CWD" > "$OUT/cwd"
printf '%s' "$KMODS" > "$OUT/kmods"
printf '%s' "$SELF" > "$OUT/self"
printf '%s' "$ACTIVE_BOUND" > "$OUT/active_bound"
{
  names=$(compgen -e | grep -E '^(RDMA_|SDP_|BENCH_)|^(CI|NO_COLOR|FORCE_COLOR|TERM|LANG|LC_ALL|TZ|HOME)$' || true)
  for v in $names ${RDMA_GUEST_ENV:-}; do
    [[ $v =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] && [ -n "${!v+x}" ] && printf '%s=%q\n' "$v" "${!v}"
  done
  printf 'RDMA_IN_GUEST=1\n'
  printf 'PATH=%q\n' "$ROOT/node_modules/.bin:$PATH:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
  [ -n "${HOME:-}" ] || printf 'HOME=/root\n'
} > "$OUT/env"
: > "$OUT/stdout"; : > "$OUT/stderr"
chmod 777 "$OUT"

say "booting ($KVER, ${MEM} MB, $SMP CPUs, TCG; limit $TIMEOUT) for: $*"
START=$SECONDS
timeout -k 10 "$TIMEOUT" qemu-system-x86_64 -accel tcg,thread=multi -cpu max -m "$MEM" -smp "$SMP" \
  -nographic -no-reboot -nic none -kernel "$VMLINUZ" -initrd "$INITRD" \
  -append "console=ttyS0 quiet panic=-1" \
  -virtfs local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap \
  -virtfs local,path="$OUT",mount_tag=out,security_model=none \
  </dev/null >"$OUT/console" 2>&1 &
QPID=$!
# Stream the command's output while the guest runs; tail exits after qemu does.
tail -c +1 -f --pid="$QPID" "$OUT/stdout" &
TAILS+=($!)
tail -c +1 -f --pid="$QPID" "$OUT/stderr" >&2 &
TAILS+=($!)
qrc=0
wait "$QPID" || qrc=$?
QPID=
for t in "${TAILS[@]}"; do wait "$t" 2>/dev/null || true; done
TAILS=()
ELAPSED=$((SECONDS - START))

console_tail() {
  echo "guest: last lines of the guest console:" >&2
  sed -e 's/\x1b\[[0-9;?]*[A-Za-z]//g' -e 's/\x1bc//g' -e 's/\r//g' "$OUT/console" | tail -n "${1:-30}" | sed 's/^/  | /' >&2
}
if [ -f "$OUT/setupfail" ]; then
  echo "guest: error: Soft-RoCE setup failed inside the guest (exit 97); its log:" >&2
  sed 's/^/  | /' "$OUT/setup.log" >&2
  console_tail 15
  exit 97
fi
if [ ! -f "$OUT/rc" ]; then
  if [ "$qrc" = 124 ] || [ "$qrc" = 137 ]; then
    unit=; [[ $TIMEOUT =~ [0-9]$ ]] && unit=s
    echo "guest: TIMED OUT: the command did not finish within $TIMEOUT$unit (RDMA_GUEST_TIMEOUT); qemu killed after ${ELAPSED}s" >&2
    console_tail 30
    exit 124
  fi
  echo "guest: the guest did not finish (qemu exit status $qrc after ${ELAPSED}s)" >&2
  console_tail 40
  exit 2
fi
rc=$(cat "$OUT/rc")
booted=$(cat "$OUT/booted" 2>/dev/null || echo '?')
active=$(sed -n 's/^rxe0 port 1: 4: ACTIVE after \([0-9]*\) ms$/\1 ms/p' "$OUT/setup.log" 2>/dev/null || true)
say "exit status $rc after ${ELAPSED}s (boot and Soft-RoCE setup: ${booted}s; rxe0 ACTIVE ${active:-?} after rdma link add)"
exit "$rc"
