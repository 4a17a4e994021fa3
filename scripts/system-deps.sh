#!/usr/bin/env bash
# Debian packages the tests need (single-node Slurm with slurmrestd and JWT, PostgreSQL, libfaketime),
# installed with one `apt-get update` and one `apt-get install`, only when something is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
missing=()
have() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
for pkg in slurm-wlm slurmctld slurmd slurm-client munge slurmrestd slurm-wlm-jwt-plugin postgresql faketime; do
  have "$pkg" || missing+=("$pkg")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "system-deps: all present"
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "system-deps: missing ${missing[*]} and not root; run as root to install them" >&2
  exit 1
fi
echo "system-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq </dev/null
apt-get install -y -qq --no-install-recommends "${missing[@]}" </dev/null
