#!/bin/bash
# PID 1 inside the User-Mode Linux kernel that scripts/uml.sh boots (not for running by hand).
#
# Stage 1 (the kernel starts it on the host's root, hostfs, mounted read-only): a tmpfs on /tmp,
# an overlay of the read-only root under a tmpfs upper layer, the run directory (a host
# directory made by scripts/uml.sh, passed as rdma_uml_out=<dir> on the kernel command line,
# which the kernel hands to init as an environment variable) mounted writable at the same
# path, then chroot into the overlay and run stage 2 there. Nothing but that run directory
# reaches the host's files.
# Stage 2: lo up, a dummy interface d0 with 192.0.2.1/24, rxe0 on it; then the command, with
# stdout, stderr and its exit status written into the run directory; then power off.
out=${rdma_uml_out:?rdma_uml_out= missing from the kernel command line}
off() {
  sync
  echo o > /proc/sysrq-trigger 2>/dev/null
  sleep 5
  halt -ff
}

if [ "${1:-}" != stage2 ]; then
  log=/tmp/uml-stage1.log
  # The first writable place: errors before it go to the console (scripts/uml.sh prints its tail).
  mount -t proc proc /proc && mount -t tmpfs -o mode=1777 tmpfs /tmp || { echo "uml init: no /proc or /tmp"; off; }
  stage1() {
    set -e
    mount -t sysfs sys /sys
    mkdir -p /tmp/.uml/upper /tmp/.uml/work /tmp/.uml/root
    mount -t overlay overlay -o lowerdir=/,upperdir=/tmp/.uml/upper,workdir=/tmp/.uml/work /tmp/.uml/root
    new=/tmp/.uml/root
    mount -t devtmpfs devtmpfs "$new/dev"
    mkdir -p "$new/dev/pts" "$new/dev/shm"
    mount -t devpts devpts "$new/dev/pts"
    mount -t tmpfs tmpfs "$new/dev/shm"
    mount --move /proc "$new/proc"
    mount --move /sys "$new/sys"
    # /tmp of the new root: the host's /tmp read-only under the overlay's RAM layer; the
    # run directory (under the host's /tmp or elsewhere) is the one writable host path.
    mkdir -p "$new$out"
    mount -t hostfs -o "$out" none "$new$out"
  }
  # Stage 1's log can only go to the run directory once it is mounted: keep it in RAM first.
  if ! (stage1) > "$log" 2>&1; then
    # Without the overlay nothing can be written: say why on the console and stop.
    cat "$log"
    echo "uml init: stage 1 failed"
    off
  fi
  cp "$log" "/tmp/.uml/root$out/stage1.log" 2>/dev/null || true
  exec chroot /tmp/.uml/root /bin/bash "$0" stage2
fi

setup() {
  set -e
  hostname rdma-uml 2>/dev/null || true
  ip link set lo up
  ip link add d0 type dummy
  ip addr add 192.0.2.1/24 dev d0
  ip link set d0 up
  rdma link add rxe0 type rxe netdev d0
  t0=$(date +%s%N)
  until [ "$(cat /sys/class/infiniband/rxe0/ports/1/state 2>/dev/null)" = "4: ACTIVE" ]; do
    [ $(( ($(date +%s%N) - t0) / 1000000 )) -lt "$(cat "$out/active_bound")000" ] \
      || { echo "rxe0 port 1 never became ACTIVE; state: $(cat /sys/class/infiniband/rxe0/ports/1/state 2>&1)"; exit 1; }
    sleep 0.05
  done
  echo "rxe0 port 1: 4: ACTIVE after $(( ($(date +%s%N) - t0) / 1000000 )) ms"
}
(setup) > "$out/setup.log" 2>&1
[ $? = 0 ] || { echo 97 > "$out/setupfail"; off; }
cut -d' ' -f1 /proc/uptime > "$out/booted"
ulimit -l unlimited
ulimit -n 65536 2>/dev/null || true
set -a; . "$out/env"; set +a
cd "$(cat "$out/cwd")" || { echo "uml: no directory $(cat "$out/cwd")" >> "$out/stderr"; echo 2 > "$out/rc"; off; }
bash -c "$(cat "$out/cmd")" >> "$out/stdout" 2>> "$out/stderr" < /dev/null
rc=$?
# A failure may be the kernel's doing (the OOM killer, a crash): keep its log's end for uml.sh.
[ $rc = 0 ] || dmesg 2>/dev/null | tail -n 40 > "$out/dmesg"
echo $rc > "$out/rc"
off
