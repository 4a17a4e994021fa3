#!/usr/bin/env bash
# Print `export` lines that give one test run its own service folders and free ports, so two
# runs on one machine (or a run next to the shared development cluster) never collide:
#   eval "$(scripts/test-env.sh)"   # then scripts/slurm-cluster.sh / scripts/pg-test.sh use them
# The folder is made here; the caller deletes it after stopping the services.
set -euo pipefail
run=$(mktemp -d "${TMPDIR:-/tmp}/szb-test.XXXXXX")
chmod 0755 "$run"
# Three free loopback ports for slurmrestd, slurmctld and the first slurmd; the second slurmd
# takes the next port, so that one must be free too.
ports=$(python3 - <<'PY'
import socket

def free(port=0):
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", port))
        return s.getsockname()[1]
    except OSError:
        return None
    finally:
        s.close()

rest, ctld = free(), free()
while True:
    slurmd = free()
    if slurmd and slurmd < 65535 and free(slurmd + 1) and slurmd not in (rest, ctld, rest - 1, ctld - 1):
        break
print(rest, ctld, slurmd)
PY
)
read -r rest ctld slurmd <<<"$ports"
echo "export SZB_TEST_RUN_DIR=$run"
echo "export SZB_SLURM_DIR=$run/slurm"
echo "export SZB_PG_DIR=$run/pg"
echo "export SZB_SLURM_REST_PORT=$rest"
echo "export SZB_SLURMCTLD_PORT=$ctld"
echo "export SZB_SLURMD_PORT=$slurmd"
