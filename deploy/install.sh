#!/usr/bin/env bash
# Install everything Berth needs on Debian 12 (as root), then run berthd or the test suite.
#   deploy/install.sh --run            install, then start berthd in the foreground
#   deploy/install.sh --test [ARGS]    install, then run the whole test suite (ARGS go to pytest),
#                                      including the cgroup-v2 guest stage (deploy/guest/)
#   deploy/install.sh                  install only
set -euo pipefail
cd "$(dirname "$0")/.."
top=$PWD

APT_PACKAGES=(
  python3 python3-venv python3-dev gcc
  iproute2 util-linux iptables nftables
  docker-registry skopeo umoci busybox-static apache2-utils socat curl
  containerd runc crun containernetworking-plugins catatonit
  docker.io docker-compose
  systemd
  qemu-system-x86 kmod xz-utils
)

if [ "$(id -u)" != 0 ]; then
  echo "install.sh: run as root (Berth manages namespaces, cgroups and mounts)" >&2
  exit 1
fi

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "install.sh: apt-get install ${missing[*]}"
  # docker.io and containerd are test peers only (tests start them privately): a policy-rc.d
  # that refuses every start keeps their packaged services (and a system dockerd) from running.
  policy=/usr/sbin/policy-rc.d
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod 755 "$policy"
    trap 'rm -f "$policy"' EXIT  # ours, for the install only: gone even if apt fails
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  if trap -p EXIT | grep -q policy; then rm -f "$policy"; trap - EXIT; fi  # before any exec
fi
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/pip install -q --disable-pip-version-check -e ".[dev]"
.venv/bin/python -m proto.generate
.venv/bin/python -m cni_plugins.install --autostart /usr/libexec/berth/cni
.venv/bin/python -m runtime.joinexec /usr/libexec/berth  # the exec helper (runtime/joinexec.c)

case "${1:-}" in
  --run)
    shift
    exec "$top/.venv/bin/berthd" "$@"
    ;;
  --test)
    shift
    # the guest stage (tests/guest): Debian 6.1 kernel unpacked into a cache, never installed
    bash deploy/guest/v2guest.sh setup
    exec "$top/.venv/bin/python" -m pytest "$@"
    ;;
  "") ;;
  *) echo "usage: deploy/install.sh [--run [berthd args] | --test [pytest args]]" >&2; exit 2 ;;
esac
