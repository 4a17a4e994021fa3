#!/usr/bin/env bash
# Print `export` lines that give one test run its own service folders and free ports, so two
# runs on one machine (or a run next to the shared development cluster) never collide:
#   eval "$(scripts/test-env.sh)"   # then scripts/slurm-cluster.sh / scripts/pg-test.sh use them
# The folder is made here; the caller deletes it after stopping the services.
set -euo pipefail
run=$(mktemp -d "${TMPDIR:-/tmp}/szb-test.XXXXXX")
chmod 0755 "$run"
# Free loopback ports for two Slurm clusters (`make test` runs two, so that two Slurm test files
# run at once: tests/slurm/groups.py): slurmrestd, slurmctld and the first slurmd of each; the
# second slurmd takes the next port, so that one must be free too.
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

taken = set()

def pick(pair=False):
    while True:
        port = free()
        wanted = {port, port + 1} if pair and port else {port}
        if port and port < 65535 and (not pair or free(port + 1)) and not wanted & taken:
            taken.update(wanted)
            return port

print(*(pick(pair) for _ in range(2) for pair in (False, False, True)))
PY
)
read -r rest ctld slurmd rest_b ctld_b slurmd_b <<<"$ports"
echo "export SZB_TEST_RUN_DIR=$run"
echo "export SZB_SLURM_DIR=$run/slurm"
echo "export SZB_PG_DIR=$run/pg"
echo "export SZB_SLURM_REST_PORT=$rest"
echo "export SZB_SLURMCTLD_PORT=$ctld"
echo "export SZB_SLURMD_PORT=$slurmd"
echo "export SZB_SLURM_B_DIR=$run/slurm-b"
echo "export SZB_SLURM_B_REST_PORT=$rest_b"
echo "export SZB_SLURM_B_CTLD_PORT=$ctld_b"
echo "export SZB_SLURM_B_SLURMD_PORT=$slurmd_b"
