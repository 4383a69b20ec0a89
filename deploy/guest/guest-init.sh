#!/bin/busybox sh
# /init of the v2guest initramfs: mount the host's / (9p, read-only) under a tmpfs overlay, then
# switch_root into it and run stage2. Written for busybox sh; everything here is in the initramfs.
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in $(cat /mods.list); do insmod "/mods/$m" || echo "init: insmod $m failed" >&2; done
# cache=loose: the checkout does not change while the guest runs, and lookups are 9p round trips
mount -t 9p -o ro,trans=virtio,version=9p2000.L,msize=512000,cache=loose hostroot /host \
  || { echo "init: cannot mount the host root" >&2; poweroff -f; }
mount -t tmpfs -o mode=755,size=4G rw /rw
mkdir -p /rw/upper /rw/work
mount -t overlay -o lowerdir=/host,upperdir=/rw/upper,workdir=/rw/work root /newroot
mount -t tmpfs -o mode=755 run /newroot/run
mkdir -p /newroot/run/guest/host /newroot/run/guest/results
mount --move /host /newroot/run/guest/host
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 results /newroot/run/guest/results
cp /bin/busybox /stage2 /newroot/run/guest/
for d in dev proc sys; do mount --move "/$d" "/newroot/$d"; done
exec switch_root /newroot /run/guest/stage2
