#!/usr/bin/env bash
# Runs a command inside a User-Mode Linux kernel with Soft-RoCE (see scripts/README.md).
#
#   bash scripts/uml.sh <command…>
#   bash scripts/uml.sh --prepare      build (or reuse) the kernel, boot nothing
#
# The second RDMA machine beside scripts/guest.sh's QEMU guest: Linux 6.1 built as an ordinary
# program (ARCH=um, scripts/uml/build.sh; 8-25 min once, then cached), with rdma_rxe built
# in. User code runs natively on the host CPU (QEMU's guest emulates it), but the kernel is
# one CPU and every system call and page fault of a process inside goes through ptrace.
# It boots in seconds with the host's root (hostfs) read-only under a RAM layer: it may write
# anywhere, and only its run directory (stdout, stderr, exit status) reaches the host. It puts
# 192.0.2.1/24 on a dummy interface d0, adds rxe0 on it, and runs the command in the same
# directory with `ulimit -l unlimited` and node_modules/.bin on PATH. The command's stdout and
# stderr stream back live; the exit status is the command's. It has no network device.
#
# Environment:
#   RDMA_UML_CACHE    kernel cache (default: <repo>/.cache/uml)
#   RDMA_UML_TIMEOUT  limit for one run, as for timeout(1) (default 40m)
#   RDMA_UML_ACTIVE_TIMEOUT  seconds for rxe0 to become ACTIVE (default 5); else exit 97
#   UML_MEM           memory in MB (default 3072)
#   RDMA_UML_MAX_MAP_COUNT  vm.max_map_count raised to this when lower and root (default
#                     1048576: UML maps guest memory page by page into each process inside)
#   RDMA_UML_LOCK     lock file (default /tmp/rdma-uml.lock): one UML at a time on this machine
#   RDMA_UML_ENV      extra variable names to pass in, space separated
#   RDMA_UML_QUIET=1  no "uml:" progress lines on stderr
# Passed in: every variable named RDMA_*, SDP_*, BENCH_*, plus CI, NO_COLOR, FORCE_COLOR, TERM,
# LANG, LC_ALL, TZ, HOME and those in RDMA_UML_ENV. Inside, RDMA_IN_GUEST=1 (the guest tests
# and benches take it as "real rdma here") and RDMA_IN_UML=1 are set, and this script then
# just runs the command. The kernel runs under `nice -n 10`: the machine is shared.
set -euo pipefail

SELF=$(readlink -f "${BASH_SOURCE[0]}")
ROOT=$(cd "$(dirname "$SELF")/.." && pwd -P)
PACKAGES=(iproute2 rdma-core ibverbs-providers libibverbs-dev librdmacm-dev ibverbs-utils)

say() { [ "${RDMA_UML_QUIET:-}" = 1 ] || echo "uml: $*" >&2; }
die() { echo "uml: error: $*" >&2; exit 2; }
usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$SELF" >&2; }

if [ "${RDMA_IN_UML:-}" = 1 ]; then
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

TIMEOUT=${RDMA_UML_TIMEOUT:-40m}
[[ $TIMEOUT =~ ^[0-9]+(\.[0-9]+)?[smhd]?$ ]] || die "RDMA_UML_TIMEOUT must look like 2400, 40m or 1h: got '$TIMEOUT'"
[[ $TIMEOUT =~ [0-9]$ ]] && TIMEOUT=${TIMEOUT}s
MEM=${UML_MEM:-3072}
[[ $MEM =~ ^[0-9]+$ ]] || die "UML_MEM must be a number of MB: got '$MEM'"
ACTIVE_BOUND=${RDMA_UML_ACTIVE_TIMEOUT:-5}
[[ $ACTIVE_BOUND =~ ^[0-9]+$ ]] || die "RDMA_UML_ACTIVE_TIMEOUT must be whole seconds: got '$ACTIVE_BOUND'"
CWD=$PWD
if [ -n "${npm_lifecycle_event:-}" ] && [ -n "${INIT_CWD:-}" ] && [ -d "$INIT_CWD" ]; then CWD=$INIT_CWD; fi

missing=()
command -v dpkg-query >/dev/null || die "this script needs a Debian-like host (dpkg, apt-get)"
for p in "${PACKAGES[@]}"; do
  [ "$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null)" = installed ] || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing ${missing[*]}"
  as_root() { if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else die "need root or sudo to run: $*"; fi; }
  as_root apt-get update -qq >&2 || true
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q -o DPkg::Lock::Timeout=240 \
    --no-install-recommends "${missing[@]}" >&2 || die "apt-get install ${missing[*]} failed"
fi

KERNEL=$(bash "$ROOT/scripts/uml/build.sh") || die "building the UML kernel failed"
[ -x "$KERNEL" ] || die "no kernel binary at '$KERNEL'"
if [ $PREPARE_ONLY = 1 ]; then
  say "ready: $KERNEL"
  exit 0
fi

LOCK=${RDMA_UML_LOCK:-/tmp/rdma-uml.lock}
exec 9>>"$LOCK"
if ! flock -n 9; then
  say "another UML is running (lock $LOCK); waiting for it"
  flock 9
fi

# UML maps guest memory into each process inside page by page: a process of a few hundred MB
# (bun with 4 MiB messages and 160 MiB registered) passes the host's default limit of 65530
# mappings, and UML then stops with "UML ran out of memory on the host side". Raised here
# when root (a per-process limit on the number of mappings, nothing else).
WANT_MAPS=${RDMA_UML_MAX_MAP_COUNT:-1048576}
[[ $WANT_MAPS =~ ^[0-9]+$ ]] || die "RDMA_UML_MAX_MAP_COUNT must be a number: got '$WANT_MAPS'"
have_maps=$(cat /proc/sys/vm/max_map_count 2>/dev/null || echo 0)
if [ "$have_maps" -lt "$WANT_MAPS" ]; then
  if [ "$(id -u)" = 0 ] && echo "$WANT_MAPS" > /proc/sys/vm/max_map_count 2>/dev/null; then
    say "raised vm.max_map_count from $have_maps to $WANT_MAPS (large processes inside UML need it)"
  else
    say "warning: vm.max_map_count is $have_maps (< $WANT_MAPS): large processes inside UML may stop it (raise it as root: sysctl -w vm.max_map_count=$WANT_MAPS)"
  fi
fi

OUT=$(mktemp -d "${TMPDIR:-/tmp}/rdma-uml.XXXXXX")
OUT=$(cd "$OUT" && pwd -P)
# UML writes its main process's id to <uml_dir>/<umid>/pid; that process makes a session of
# its own (it is not in ours), so cleanup finds it there.
UMLDIR=$OUT/.uml
mkdir -p "$UMLDIR"
UPID=
WATCH=
TAILS=()
kernel_pid() { cat "$UMLDIR/run/pid" 2>/dev/null || true; }
stop_kernel() {
  local kp
  kp=$(kernel_pid)
  [ -n "$kp" ] || return 0
  kill -TERM "$kp" 2>/dev/null || return 0
  for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$kp" 2>/dev/null || break; sleep 0.5; done
  kill -KILL -- "-$kp" 2>/dev/null || true
}
cleanup() {
  [ -n "$WATCH" ] && kill "$WATCH" 2>/dev/null || true
  if [ -n "$UPID" ]; then stop_kernel; kill -KILL "$UPID" 2>/dev/null || true; fi
  for t in "${TAILS[@]}"; do kill "$t" 2>/dev/null || true; done
  rm -rf "$OUT"
}
trap cleanup EXIT
trap 'echo "uml: interrupted" >&2; exit 130' INT TERM

printf '%q ' "$@" > "$OUT/cmd"
printf '%s' "$CWD" > "$OUT/cwd"
printf '%s' "$ACTIVE_BOUND" > "$OUT/active_bound"
{
  names=$(compgen -e | grep -E '^(RDMA_|SDP_|BENCH_)|^(CI|NO_COLOR|FORCE_COLOR|TERM|LANG|LC_ALL|TZ|HOME)$' || true)
  for v in $names ${RDMA_UML_ENV:-}; do
    [[ $v =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] && [ -n "${!v+x}" ] && printf '%s=%q\n' "$v" "${!v}"
  done
  printf 'RDMA_IN_GUEST=1\nRDMA_IN_UML=1\n'
  printf 'PATH=%q\n' "$ROOT/node_modules/.bin:$PATH:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
  [ -n "${HOME:-}" ] || printf 'HOME=/root\n'
} > "$OUT/env"
: > "$OUT/stdout"; : > "$OUT/stderr"

say "booting $(basename "$KERNEL") (${MEM} MB, 1 CPU, user code native; limit $TIMEOUT) for: $*"
START=$SECONDS
# The kernel's memory file goes to TMPDIR (UML's default); /dev/shm is a tmpfs here too.
setsid timeout -k 10 "$TIMEOUT" nice -n 10 "$KERNEL" mem="${MEM}M" rootfstype=hostfs rootflags=/ ro \
  init="$ROOT/scripts/uml/init.sh" rdma_uml_out="$OUT" umid=run uml_dir="$UMLDIR" \
  con=null con0=fd:0,fd:1 ssl=null quiet \
  </dev/null >"$OUT/console" 2>&1 &
UPID=$!
# UML does not exit after a host-side mmap failure: it hangs. Stop it at once instead.
(
  while kill -0 "$UPID" 2>/dev/null; do
    if grep -q 'ran out of memory on the host side' "$OUT/console" 2>/dev/null; then
      touch "$OUT/hostoom"; stop_kernel; exit 0
    fi
    sleep 2
  done
) &
WATCH=$!
tail -c +1 -f --pid="$UPID" "$OUT/stdout" &
TAILS+=($!)
tail -c +1 -f --pid="$UPID" "$OUT/stderr" >&2 &
TAILS+=($!)
urc=0
wait "$UPID" || urc=$?
stop_kernel
kill "$WATCH" 2>/dev/null || true
WATCH=
UPID=
for t in "${TAILS[@]}"; do wait "$t" 2>/dev/null || true; done
TAILS=()
ELAPSED=$((SECONDS - START))

console_tail() {
  echo "uml: last lines of the UML console:" >&2
  sed -e 's/\r//g' "$OUT/console" | tail -n "${1:-30}" | sed 's/^/  | /' >&2
}
if [ -f "$OUT/setupfail" ]; then
  echo "uml: error: Soft-RoCE setup failed inside UML (exit 97); its log:" >&2
  sed 's/^/  | /' "$OUT/setup.log" >&2
  exit 97
fi
if [ ! -f "$OUT/rc" ]; then
  if [ -f "$OUT/hostoom" ]; then
    echo "uml: error: UML ran out of host mappings or memory after ${ELAPSED}s and was stopped (vm.max_map_count is $(cat /proc/sys/vm/max_map_count); see RDMA_UML_MAX_MAP_COUNT)" >&2
    console_tail 10
    exit 2
  fi
  if [ "$urc" = 124 ] || [ "$urc" = 137 ]; then
    echo "uml: TIMED OUT: the command did not finish within $TIMEOUT (RDMA_UML_TIMEOUT); killed after ${ELAPSED}s" >&2
    console_tail 30
    exit 124
  fi
  echo "uml: UML did not finish the command (kernel exit status $urc after ${ELAPSED}s)" >&2
  console_tail 40
  exit 2
fi
rc=$(cat "$OUT/rc")
if [ "$rc" != 0 ] && grep -qE 'Out of memory|Killed process|Oops|BUG|panic|segfault' "$OUT/dmesg" 2>/dev/null; then
  echo "uml: the command failed (exit status $rc) and the UML kernel logged this:" >&2
  grep -E 'Out of memory|Killed process|Oops|BUG|panic|segfault' "$OUT/dmesg" | tail -n 10 | sed 's/^/  | /' >&2
fi
booted=$(cat "$OUT/booted" 2>/dev/null || echo '?')
active=$(sed -n 's/^rxe0 port 1: 4: ACTIVE after \([0-9]*\) ms$/\1 ms/p' "$OUT/setup.log" 2>/dev/null || true)
say "exit status $rc after ${ELAPSED}s (boot and Soft-RoCE setup: ${booted}s; rxe0 ACTIVE ${active:-?} after rdma link add)"
exit "$rc"
