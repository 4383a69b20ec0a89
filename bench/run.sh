#!/usr/bin/env bash
# Berth vs containerd, side by side in one run (as root):
#   bench/run.sh [--quick] [--out DIR] [--only pull,lifecycle,exec,population,sharedpid,cni,start,docker] [--profile]
# Installs everything first (deploy/install.sh), then prints the table and writes results.json,
# results.png (and profile.txt with --profile) under bench/results/<YYYY-MM-DD-HHMM>/.
set -euo pipefail
cd "$(dirname "$0")/.."
deploy/install.sh
exec .venv/bin/python -m bench "$@"
