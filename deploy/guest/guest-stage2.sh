#!/run/guest/busybox sh
# PID 1 of the v2guest after switch_root: the kernel filesystems (cgroup2 alone at
# /sys/fs/cgroup), fresh tmpfs where overlay upperdirs go, then the host's command; its status
# goes to the results share and the guest powers off.
BB=/run/guest/busybox
R=/run/guest/results
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
. $R/.env    # GUEST_RESULTS GUEST_CWD GUEST_CACHE KVER GUEST_TMPFS, written by v2guest.sh
mkdir -p /dev/pts /dev/shm /dev/mqueue
mount -t devpts -o gid=5,mode=620,ptmxmode=666 devpts /dev/pts
mount -t tmpfs -o mode=1777 shm /dev/shm
mount -t mqueue mqueue /dev/mqueue
mount -t cgroup2 -o nsdelegate cgroup2 /sys/fs/cgroup
mount -t bpf bpf /sys/fs/bpf 2>/dev/null
for d in /tmp /var/tmp; do mount -t tmpfs -o mode=1777 tmp "$d"; done
for d in $GUEST_TMPFS; do mkdir -p "$d" && mount -t tmpfs -o mode=755 tmpfs "$d"; done
# the cache (kernel modules) and the results dir at their host paths
mkdir -p "$GUEST_CACHE" "$GUEST_RESULTS"
mount --bind "/run/guest/host$GUEST_CACHE" "$GUEST_CACHE"
mount --bind "$R" "$GUEST_RESULTS"
# the host's modprobe with the guest kernel's modules (veth, bridge, br_netfilter, ...)
mkdir -p /lib/modules && ln -sfn "$GUEST_CACHE/kernel/lib/modules/$KVER" "/lib/modules/$KVER"
echo /sbin/modprobe > /proc/sys/kernel/modprobe
$BB hostname v2guest
$BB ip link set lo up
export HOME=/root TERM=dumb LANG=C.UTF-8 GUEST_RESULTS BERTH_IN_GUEST=1
cd "$GUEST_CWD" 2>/dev/null || cd /
OUT=/dev/console
for p in /sys/class/virtio-ports/vport*; do
  [ "$(cat "$p/name" 2>/dev/null)" = berth.out ] && OUT=/dev/${p##*/}
done
/bin/bash "$R/.cmd" </dev/null >"$OUT" 2>&1
echo $? > "$R/.rc"
sync
$BB poweroff -f
