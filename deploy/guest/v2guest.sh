#!/bin/bash
# deploy/guest/v2guest.sh: a throwaway cgroup-v2 guest for CI (see docs/matrix.md).
#
#   v2guest.sh setup          fetch the Debian 12 kernel into the cache, build the initramfs
#   v2guest.sh run 'COMMAND'  boot, run COMMAND as root with bash in the current directory,
#                             print its stdout+stderr, exit with its status
#
# The guest is a stock Debian 12 kernel (linux-image-amd64, 6.1.x) under QEMU TCG: /dev/kvm on
# our CI machines is PVM, which cannot run a stock kernel. Its only cgroup hierarchy is cgroup2 at
# /sys/fs/cgroup (cgroup_no_v1=all). The host's / is its root, shared read-only over virtio-9p
# under a tmpfs overlay: the guest may write anywhere and every write is gone at power-off. The
# kernel package is unpacked with dpkg -x into the cache and never installed on the host.
#
# Environment (all optional):
#   BERTH_GUEST_CACHE=/var/cache/berth/v2guest   kernel, initramfs, results of runs
#   GUEST_CPUS=2 GUEST_MEM=2G GUEST_TIMEOUT=1800 (seconds; exit 124 when it expires)
#   GUEST_RESULTS=DIR   host dir shared read-write, mounted at the same path in the guest and
#                       exported there as $GUEST_RESULTS (default: a new dir under the cache)
#   GUEST_TMPFS="A B"   guest dirs to cover with a fresh tmpfs: overlayfs refuses an upperdir on
#                       the root overlay, so state dirs that hold upperdirs must be listed here
#                       (/tmp and /var/tmp always are)
#   GUEST_CONSOLE=1     print the guest kernel's console log after the run
# Exit status: COMMAND's; 124 on timeout; 125 when the guest died without reporting one.
set -euo pipefail

CACHE=${BERTH_GUEST_CACHE:-/var/cache/berth/v2guest}
CPUS=${GUEST_CPUS:-2}
MEM=${GUEST_MEM:-2G}
TIMEOUT=${GUEST_TIMEOUT:-1800}
TMPFS_DIRS=${GUEST_TMPFS:-}
SELF=$(readlink -f "$0")
# modules the initramfs loads (no udev in the guest loads them later), in dependency order
EARLY_MODULES=(virtio_pci virtio_console virtio_blk 9pnet_virtio 9p overlay)

say() { echo "[v2guest] $*" >&2; }
die() { say "$*"; exit 2; }

fetch_kernel() {
  # linux-image-amd64 is the metapackage; its Depends names the ABI (linux-image-6.1.0-N-amd64)
  local debs=$CACHE/debs meta pkg
  mkdir -p "$debs"
  ( cd "$debs"
    apt-get download -q -o APT::Sandbox::User=root linux-image-amd64 >&2
    meta=$(ls -t linux-image-amd64_*.deb | head -1)
    pkg=$(dpkg-deb -f "$meta" Depends | grep -o 'linux-image-6\.1\.[^ ,]*-amd64' | head -1)
    [ -n "$pkg" ] || die "linux-image-amd64 ($meta) does not depend on a 6.1 kernel"
    apt-get download -q -o APT::Sandbox::User=root "$pkg" >&2
    rm -rf "$CACHE/kernel.new"
    dpkg -x "$(ls -t "${pkg}"_*.deb | head -1)" "$CACHE/kernel.new"
    rm -f ./*.deb )
  rm -rf "$CACHE/kernel"
  mv "$CACHE/kernel.new" "$CACHE/kernel"
}

locate_kernel() {
  KIMG=$(ls "$CACHE"/kernel/boot/vmlinuz-* 2>/dev/null | head -1 || true)
  [ -n "$KIMG" ] || return 1
  KVER=${KIMG##*/vmlinuz-}
  VMLINUX=$CACHE/vmlinux-$KVER
  INITRD=$CACHE/initramfs-$KVER.cpio.gz
}

extract_vmlinux() {
  # The guest decompressing its own XZ bzImage under TCG costs ~8 s per boot; the host does it
  # once, and QEMU boots the ELF through its PVH entry point.
  local off
  off=$(LC_ALL=C grep -aboP '\xfd7zXZ\x00' "$KIMG" | head -1 | cut -d: -f1 || true)
  [ -n "$off" ] || die "$KIMG has no XZ payload"
  tail -c +$((off + 1)) "$KIMG" | xz -dc > "$VMLINUX.new" 2>/dev/null || true
  [ "$(head -c 4 "$VMLINUX.new" | od -An -c | tr -d ' ')" = '177ELF' ] \
    || die "could not extract an ELF vmlinux from $KIMG"
  mv "$VMLINUX.new" "$VMLINUX"
}

build_initramfs() {
  say "building $INITRD"
  local d m line f
  d=$(mktemp -d "$CACHE/initramfs.XXXXXX")
  mkdir -p "$d"/{bin,dev,proc,sys,mods,host,rw,newroot}
  cp /bin/busybox "$d/bin/busybox"
  : > "$d/mods.list"
  for m in "${EARLY_MODULES[@]}"; do
    while read -r line; do
      case "$line" in insmod\ *) f=${line#insmod }; f=${f%% *} ;; *) continue ;; esac
      grep -qx "${f##*/}" "$d/mods.list" && continue
      cp "$f" "$d/mods/" && echo "${f##*/}" >> "$d/mods.list"
    done < <(modprobe -d "$CACHE/kernel" -S "$KVER" --show-depends "$m")
  done
  cp "$(dirname "$SELF")/guest-init.sh" "$d/init"
  cp "$(dirname "$SELF")/guest-stage2.sh" "$d/stage2"
  chmod 755 "$d/init" "$d/stage2"
  ( cd "$d" && find . | /bin/busybox cpio -o -H newc 2>/dev/null ) | gzip -1 > "$INITRD.new"
  mv "$INITRD.new" "$INITRD"
  rm -rf "$d"
}

setup() {
  command -v qemu-system-x86_64 >/dev/null || die "qemu-system-x86_64 missing: run deploy/install.sh"
  command -v depmod >/dev/null || die "depmod missing (apt package kmod): run deploy/install.sh"
  # the initramfs needs a static busybox (ldd fails on one)
  { [ -x /bin/busybox ] && ! ldd /bin/busybox >/dev/null 2>&1; } \
    || die "/bin/busybox is not static (apt package busybox-static): run deploy/install.sh"
  mkdir -p "$CACHE/runs"
  exec 9>"$CACHE/.lock"
  flock 9    # two sessions setting up one cache serialise here
  if ! locate_kernel; then
    say "fetching the Debian 6.1 kernel package into $CACHE (not installed on the host)"
    fetch_kernel
    locate_kernel || die "no vmlinuz in the unpacked kernel package"
  fi
  [ -f "$CACHE/kernel/lib/modules/$KVER/modules.dep" ] || depmod -b "$CACHE/kernel" "$KVER"
  [ -s "$VMLINUX" ] || extract_vmlinux
  local dir; dir=$(dirname "$SELF")
  if [ ! -f "$INITRD" ] || [ "$INITRD" -ot "$SELF" ] || [ "$INITRD" -ot "$dir/guest-init.sh" ] \
     || [ "$INITRD" -ot "$dir/guest-stage2.sh" ]; then
    build_initramfs
  fi
  exec 9>&-
}

QPID='' CATPID='' FIFODIR=''
# shellcheck disable=SC2317  # called by the traps
cleanup() {
  [ -z "$QPID" ] || { kill "$QPID" 2>/dev/null || true; wait "$QPID" 2>/dev/null || true; }
  [ -z "$CATPID" ] || { kill "$CATPID" 2>/dev/null || true; wait "$CATPID" 2>/dev/null || true; }
  [ -z "$FIFODIR" ] || rm -rf "$FIFODIR"
}

run() {
  local cmd=$1 results qrc
  results=${GUEST_RESULTS:-$(mktemp -d "$CACHE/runs/run.XXXXXX")}
  mkdir -p "$results"
  results=$(cd "$results" && pwd -P)
  rm -f "$results/.rc"
  printf '%s\n' "$cmd" > "$results/.cmd"
  {
    printf 'GUEST_RESULTS=%q\n' "$results"
    printf 'GUEST_CWD=%q\n' "$(pwd -P)"
    printf 'GUEST_CACHE=%q\n' "$(cd "$CACHE" && pwd -P)"
    printf 'KVER=%q\n' "$KVER"
    printf 'GUEST_TMPFS=%q\n' "$TMPFS_DIRS"
  } > "$results/.env"
  # The command's output comes back over a virtio-serial port whose chardev is a FIFO pair:
  # a file chardev would overwrite our stdout at its own offset, and stdio with stdin at EOF
  # counts as disconnected.
  FIFODIR=$(mktemp -d /tmp/v2guest-fifo.XXXXXX)
  mkfifo "$FIFODIR/out.in" "$FIFODIR/out.out"
  local append="console=ttyS0 quiet loglevel=3 panic=-1 rdinit=/init cgroup_no_v1=all"
  append+=" mitigations=off no5lvl nokaslr tsc=reliable"
  local qemu=(qemu-system-x86_64 -nodefaults -no-user-config -display none -no-reboot
    -machine q35 -accel tcg,thread=multi,tb-size=512 -cpu max -smp "$CPUS" -m "$MEM"
    -kernel "$VMLINUX" -initrd "$INITRD" -append "$append"
    -serial "file:$results/.console.log" -monitor none
    -fsdev local,id=hostroot,path=/,security_model=none,readonly=on,multidevs=remap
    -device virtio-9p-pci,fsdev=hostroot,mount_tag=hostroot
    -fsdev local,id=results,path="$results",security_model=none,multidevs=remap
    -device virtio-9p-pci,fsdev=results,mount_tag=results
    -device virtio-serial-pci -chardev pipe,id=out,path="$FIFODIR/out"
    -device virtserialport,chardev=out,name=berth.out
    -blockdev driver=null-co,node-name=disk0,size=67108864
    -device virtio-blk-pci,drive=disk0
    -device virtio-rng-pci)
  trap cleanup EXIT
  trap 'cleanup; exit 130' INT TERM
  cat "$FIFODIR/out.out" &
  CATPID=$!
  timeout -k 10 "$TIMEOUT" "${qemu[@]}" </dev/null &
  QPID=$!
  set +e; wait "$QPID"; qrc=$?; set -e
  QPID=''
  # cat ends at EOF once QEMU is gone; if QEMU never opened the FIFO, cat is stuck in open()
  for _ in $(seq 50); do kill -0 "$CATPID" 2>/dev/null || break; sleep 0.1; done
  kill "$CATPID" 2>/dev/null || true
  wait "$CATPID" 2>/dev/null || true
  CATPID=''
  if [ "${GUEST_CONSOLE:-0}" = 1 ]; then
    say "---- guest console ----"; tr -d '\r' < "$results/.console.log" >&2
  fi
  [ -f "$results/.rc" ] && return "$(cat "$results/.rc")"
  say "the guest reported no exit status (qemu: $qrc); console tail:"
  tail -n 30 "$results/.console.log" 2>/dev/null | tr -d '\r' >&2 || true
  case $qrc in 124|137) say "timed out after ${TIMEOUT}s"; return 124 ;; *) return 125 ;; esac
}

[ "$(id -u)" = 0 ] || die "run as root"
case "${1:-}" in
  setup) setup ;;
  run) [ $# -eq 2 ] || die "usage: $0 run 'COMMAND'"; setup; run "$2" ;;
  *) die "usage: $0 setup | run 'COMMAND'" ;;
esac
