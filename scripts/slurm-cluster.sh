#!/usr/bin/env bash
# Single-host Slurm 22.05 cluster for the Slurm adapter's integration tests (Debian 12 packages).
#
# Usage (as root):  scripts/slurm-cluster.sh install|start|stop|status|env|wipe
#
#   install  apt-get the Slurm packages (skipped when already installed)
#   start    start munge, slurmctld, two slurmd and slurmrestd (JWT); idempotent: only missing
#            daemons are (re)started, then it waits until both nodes are usable and slurmrestd answers
#   stop     stop every daemon this script started (and any job still running), wait until gone
#   status   exit 0 only when all daemons are alive, both nodes usable and slurmrestd answers with a token
#   env      print `export` lines for clients: eval "$(scripts/slurm-cluster.sh env)"
#   wipe     stop, then delete ${SZB_SLURM_DIR} (job ids restart at 1)
#
# Layout: two nodes on this one host, each run by its own slurmd (`slurmd -N <node>`, own port, spool
# dir and pid file), each with 4 fake GPUs of one type, one partition per node:
#     partition ascend -> node szb-ascend, Gres=gpu:ascend910b:4
#     partition a800   -> node szb-a800,   Gres=gpu:a800:4
#     partition cpu    -> both nodes (CPU-only jobs; they take cores, never GPUs)
# so per-partition GPU capacity is distinct and enforced by Slurm (a 4 x a800 job pends while the a800
# GPUs are busy even if the ascend ones are free). The fake GPUs are character devices cloned from
# /dev/null (slurmd insists on a device file); jobs see CUDA_VISIBLE_DEVICES / SLURM_JOB_GPUS as usual.
#
# Everything (config, state, logs, pid files, fake devices, its own munged) lives under
# ${SZB_SLURM_DIR:-/tmp/szb-slurm}. Each cluster runs a munged of its own on a socket in that folder
# (slurm.conf's AuthInfo=socket=...), never the system's: two clusters on one machine (two test runs)
# can start and stop without ever stopping each other's munge.
# Clients need SLURM_CONF=$SZB_SLURM_DIR/etc/slurm.conf (printed by `env`).
# slurmrestd refuses to run as root, so it runs as an unprivileged system user (created if missing);
# it uses rest_auth/jwt, and jobs are submitted as the user named in the token (root by default).
#
# No systemd. PID 1 on the target VMs does not reap orphans, so every daemon is started under a small
# perl "subreaper" (prctl PR_SET_CHILD_SUBREAPER) that reaps the daemons and the slurmstepd processes they
# spawn; it exits by itself once all of them are gone.
#
# Tunables (environment): SZB_SLURM_DIR, SZB_SLURM_REST_PORT (6820), SZB_SLURMCTLD_PORT (6817),
#   SZB_SLURMD_PORT (6818; the second node uses +1), SZB_SLURM_REST_USER (szb-slurmrest),
#   SZB_SLURM_GPUS (4 per partition), SZB_SLURM_CPUS (16 per node; may exceed nproc),
#   SZB_SLURM_MEM_MB (per node, default ~40% of RAM), SZB_SLURM_TOKEN_USER (root),
#   SZB_SLURM_TOKEN_LIFESPAN (seconds, 86400), SZB_SLURM_MIN_JOB_AGE (seconds finished jobs stay
#   visible, 120).
set -euo pipefail

D=${SZB_SLURM_DIR:-/tmp/szb-slurm}
export SLURM_CONF=$D/etc/slurm.conf
# The ports a cluster was started with are kept in its folder, so `env`, `status` and `stop`
# find them again without the variables.
[ -s "$D/etc/ports" ] && . "$D/etc/ports"
REST_PORT=${SZB_SLURM_REST_PORT:-${SAVED_REST_PORT:-6820}}
CTLD_PORT=${SZB_SLURMCTLD_PORT:-${SAVED_CTLD_PORT:-6817}}
SLURMD_PORT=${SZB_SLURMD_PORT:-${SAVED_SLURMD_PORT:-6818}}
REST_USER=${SZB_SLURM_REST_USER:-szb-slurmrest}
GPUS=${SZB_SLURM_GPUS:-4}
CPUS=${SZB_SLURM_CPUS:-16}
MEM=${SZB_SLURM_MEM_MB:-$(( $(awk '/MemTotal/{print $2}' /proc/meminfo) / 1024 * 2 / 5 ))}
TOKEN_USER=${SZB_SLURM_TOKEN_USER:-root}
TOKEN_LIFESPAN=${SZB_SLURM_TOKEN_LIFESPAN:-86400}
MIN_JOB_AGE=${SZB_SLURM_MIN_JOB_AGE:-120}
REST_API=v0.0.38                       # newest openapi plugin shipped with slurmrestd 22.05
MUNGE_DIR=$D/munge                     # this cluster's munged: socket, pid, seed and log
MUNGE_SOCKET=$MUNGE_DIR/munge.socket
NODES=(szb-ascend szb-a800)
HOST=$(hostname -s)
PACKAGES=(slurm-wlm slurmctld slurmd slurm-client munge slurmrestd slurm-wlm-jwt-plugin)
JWT_PLUGIN=/usr/lib/$(uname -m)-linux-gnu/slurm-wlm/auth_jwt.so

CONFIG_CHANGED=0
log() { echo "slurm-cluster: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# A pid is alive when it exists and is not a zombie (kill -0 succeeds on zombies).
alive() { [ -n "${1:-}" ] && [ -r "/proc/$1/stat" ] && [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != Z ]; }
pid_of() { [ -s "$1" ] && cat "$1" || true; }
pidfile() {
  case $1 in
    slurmctld) echo "$D/run/slurmctld.pid" ;;
    slurmrestd) echo "$D/run/slurmrestd.pid" ;;
    munged) echo "$MUNGE_DIR/munged.pid" ;;
    *) echo "$D/run/slurmd-$1.pid" ;;   # one per node name
  esac
}
running() { alive "$(pid_of "$(pidfile "$1")")"; }

# ---------------------------------------------------------------------------------------------- install
installed() {
  command -v slurmrestd >/dev/null && command -v slurmctld >/dev/null && command -v slurmd >/dev/null \
    && command -v sbatch >/dev/null && command -v munged >/dev/null && [ -e "$JWT_PLUGIN" ]
}

do_install() {
  if installed; then log "packages already installed"; return 0; fi
  [ "$(id -u)" = 0 ] || die "install must run as root"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq </dev/null
  apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}" </dev/null
  installed || die "packages installed but slurmrestd / $JWT_PLUGIN still missing"
}

# ---------------------------------------------------------------------------------------------- config
write_config() {
  mkdir -p "$D"/{etc,spool/ctld,log,run,fakedev,jobs}
  chmod 0755 "$D" "$D/jobs"
  for n in "${NODES[@]}"; do mkdir -p "$D/spool/$n"; done
  # Fake GPUs: slurmd requires File= to be a character/block device -> clones of /dev/null (c 1 3).
  local i
  for i in $(seq 0 $((GPUS - 1))); do
    for t in ascend a800; do
      [ -c "$D/fakedev/$t$i" ] || { rm -f "$D/fakedev/$t$i"; mknod "$D/fakedev/$t$i" c 1 3; }
    done
  done
  [ -s "$D/etc/jwt_hs256.key" ] || {
    (umask 077; dd if=/dev/urandom of="$D/etc/jwt_hs256.key" bs=32 count=1 status=none)
  }
  chmod 0600 "$D/etc/jwt_hs256.key"
  local tmp="$D/etc/slurm.conf.new"
  cat > "$tmp" <<CONF
# generated by scripts/slurm-cluster.sh -- do not edit
ClusterName=szb
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$MUNGE_SOCKET
AuthAltTypes=auth/jwt
AuthAltParameters=jwt_key=$D/etc/jwt_hs256.key
StateSaveLocation=$D/spool/ctld
SlurmdSpoolDir=$D/spool/%n
SlurmctldPidFile=$D/run/slurmctld.pid
SlurmdPidFile=$D/run/slurmd-%n.pid
SlurmctldLogFile=$D/log/slurmctld.log
SlurmdLogFile=$D/log/slurmd-%n.log
SlurmctldPort=$CTLD_PORT
# no systemd / cgroups on the VM
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
MpiDefault=none
MailProg=/bin/true
SchedulerType=sched/backfill
# backfill every second so pending jobs get an expected start time quickly
SchedulerParameters=bf_interval=1,bf_resolution=1,bf_continue,sched_min_interval=100000
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
GresTypes=gpu
ReturnToService=2
# the two fake nodes advertise more CPUs / memory than the VM has
SlurmdParameters=config_overrides
DefMemPerCPU=256
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/filetxt
JobCompLoc=$D/log/jobcomp.txt
# short timers: fast tests
MinJobAge=$MIN_JOB_AGE
KillWait=2
InactiveLimit=0
OverTimeLimit=0
SlurmdTimeout=60
SlurmctldTimeout=30
NodeName=szb-ascend NodeHostname=$HOST NodeAddr=127.0.0.1 Port=$SLURMD_PORT CPUs=$CPUS RealMemory=$MEM Gres=gpu:ascend910b:$GPUS State=UNKNOWN
NodeName=szb-a800 NodeHostname=$HOST NodeAddr=127.0.0.1 Port=$((SLURMD_PORT + 1)) CPUs=$CPUS RealMemory=$MEM Gres=gpu:a800:$GPUS State=UNKNOWN
PartitionName=ascend Nodes=szb-ascend Default=YES MaxTime=INFINITE State=UP
PartitionName=a800 Nodes=szb-a800 MaxTime=INFINITE State=UP
PartitionName=cpu Nodes=szb-ascend,szb-a800 MaxTime=INFINITE State=UP
CONF
  if [ -e "$D/etc/slurm.conf" ] && ! cmp -s "$tmp" "$D/etc/slurm.conf"; then CONFIG_CHANGED=1; fi
  printf 'SAVED_REST_PORT=%s\nSAVED_CTLD_PORT=%s\nSAVED_SLURMD_PORT=%s\n' "$REST_PORT" "$CTLD_PORT" "$SLURMD_PORT" \
    > "$D/etc/ports"
  mv "$tmp" "$D/etc/slurm.conf"
  cat > "$D/etc/gres.conf" <<CONF
AutoDetect=off
NodeName=szb-ascend Name=gpu Type=ascend910b File=$D/fakedev/ascend[0-$((GPUS - 1))]
NodeName=szb-a800 Name=gpu Type=a800 File=$D/fakedev/a800[0-$((GPUS - 1))]
CONF
}

# ---------------------------------------------------------------------------------------------- reaper
# perl (always present on Debian) subreaper: becomes PR_SET_CHILD_SUBREAPER, runs "$@" (which starts
# daemons that fork into the background), reaps everything that gets reparented to it and exits
# when it has no children left.
REAPER_PL='
use strict; use POSIX ":sys_wait_h";
my %nr = (x86_64 => 157, aarch64 => 167, i686 => 172, ppc64le => 171, s390x => 172, riscv64 => 167);
my $arch = shift @ARGV; my $pids = shift @ARGV;
syscall($nr{$arch} // 157, 36, 1, 0, 0, 0) == 0 or warn "prctl(PR_SET_CHILD_SUBREAPER) failed: $!\n";
open(my $fh, ">>", $pids) or die "$pids: $!"; print $fh "$$\n"; close $fh;
my $child = fork(); die "fork: $!" unless defined $child;
if ($child == 0) { exec(@ARGV) or die "exec: $!"; }
while (1) {
  my $k = waitpid(-1, WNOHANG);
  last if $k == -1;                        # no children left: every daemon is gone
  select(undef, undef, undef, 0.5) if $k == 0;
}
'

# run_reaped "shell commands": the commands start daemons in the background; they end up under a reaper.
run_reaped() {
  printf '%s' "$REAPER_PL" > "$D/run/szb-reaper.pl"
  setsid perl "$D/run/szb-reaper.pl" "$(uname -m)" "$D/run/reapers" /bin/bash -c "$1" \
    </dev/null >>"$D/log/reaper.log" 2>&1 &   # not waited for: the reaper outlives this script
}

# ---------------------------------------------------------------------------------------------- start
wait_for() {  # wait_for SECONDS DESCRIPTION CMD...
  local secs=$1 what=$2; shift 2
  local deadline=$(( $(date +%s) + secs ))
  until "$@" >/dev/null 2>&1; do
    [ "$(date +%s)" -lt "$deadline" ] || { log "timed out waiting for $what"; return 1; }
    sleep 0.2
  done
}

munge_ok() { munge -S "$MUNGE_SOCKET" -n </dev/null | unmunge -S "$MUNGE_SOCKET" >/dev/null; }
ctld_ok() { scontrol ping 2>/dev/null | grep -q 'is UP'; }
nodes_ok() {  # every node registered and usable (not down / drained / not responding / unknown)
  local states
  states=$(sinfo -h -N -o '%N %T' 2>/dev/null) || return 1
  local n
  for n in "${NODES[@]}"; do
    echo "$states" | grep -qE "^$n (idle|mixed|allocated|completing)\$" || return 1
  done
}
rest_http_code() {  # prints the HTTP status of an authenticated ping (000 = not answering)
  local token=${1:-}
  curl -s -m 5 -o /dev/null -w '%{http_code}' -H "X-SLURM-USER-NAME: $TOKEN_USER" \
    -H "X-SLURM-USER-TOKEN: $token" "http://127.0.0.1:$REST_PORT/slurm/$REST_API/ping" || true
}
rest_answers() { [ "$(rest_http_code)" != 000 ]; }
token() { scontrol token username="$TOKEN_USER" lifespan="$TOKEN_LIFESPAN" | sed -n 's/^SLURM_JWT=//p'; }

start() {
  [ "$(id -u)" = 0 ] || die "start must run as root"
  installed || die "Slurm packages missing: run '$0 install' first"
  command -v perl >/dev/null || die "perl is required"
  local t0; t0=$(date +%s.%N)
  write_config
  id "$REST_USER" >/dev/null 2>&1 || useradd -r -M -d /nonexistent -s /usr/sbin/nologin "$REST_USER"
  # munge: Debian's postinst created /etc/munge/munge.key; this cluster runs its own munged with it
  install -d -o munge -g munge -m 0755 "$MUNGE_DIR"
  local cmds="" n ctld_was_running=0
  running slurmctld && ctld_was_running=1
  if ! munge_ok 2>/dev/null; then
    rm -f "$MUNGE_DIR/munged.pid" "$MUNGE_SOCKET" "$MUNGE_SOCKET.lock"
    # munged must answer before slurmctld / slurmd start; all of it runs under one reaper
    cmds+="runuser -u munge -- /usr/sbin/munged --socket='$MUNGE_SOCKET' --pid-file='$MUNGE_DIR/munged.pid' \
--seed-file='$MUNGE_DIR/munged.seed' --log-file='$MUNGE_DIR/munged.log'; "
    cmds+="for i in \$(seq 75); do munge -S '$MUNGE_SOCKET' -n </dev/null | unmunge -S '$MUNGE_SOCKET' >/dev/null 2>&1 && break; sleep 0.2; done; "
  fi
  running slurmctld || cmds+="/usr/sbin/slurmctld -f '$SLURM_CONF'; "
  for n in "${NODES[@]}"; do
    running "$n" || cmds+="/usr/sbin/slurmd -f '$SLURM_CONF' -N $n; "
  done
  if ! running slurmrestd; then
    if rest_answers; then die "port $REST_PORT is already used by another process"; fi
    # setpriv execs (no fork), so \$! is slurmrestd itself
    cmds+="SLURM_CONF='$SLURM_CONF' SLURM_JWT=daemon nohup setpriv --reuid='$REST_USER' --regid='$REST_USER' \
--init-groups -- /usr/sbin/slurmrestd -a rest_auth/jwt -s openapi/$REST_API 127.0.0.1:$REST_PORT \
>>'$D/log/slurmrestd.log' 2>&1 </dev/null & echo \$! > '$D/run/slurmrestd.pid'; "
  fi
  if [ -z "$cmds" ]; then log "daemons already running"; else run_reaped "$cmds"; fi
  wait_for 30 "slurmctld" ctld_ok || die "slurmctld not answering; see $D/log/slurmctld.log"
  if [ "$CONFIG_CHANGED" = 1 ] && [ "$ctld_was_running" = 1 ]; then
    log "slurm.conf changed: scontrol reconfigure"
    scontrol reconfigure || die "scontrol reconfigure failed"
  fi
  wait_for 40 "nodes ${NODES[*]}" nodes_ok || { sinfo -N >&2 || true; die "nodes not up; see $D/log/slurmd-*.log"; }
  # (slurmrestd takes seconds idle, but a CI run's other workers can slow its start past 20 s)
  wait_for 60 "slurmrestd" rest_answers || die "slurmrestd not answering; see $D/log/slurmrestd.log"
  local code; code=$(rest_http_code "$(token)")
  [ "$code" = 200 ] || die "slurmrestd ping with a JWT returned HTTP $code"
  log "up in $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}')s: $(sinfo -h -o '%P=%G(%T)' | tr '\n' ' ')"
}

# ---------------------------------------------------------------------------------------------- stop
descendants() {  # all descendant pids of $1 (children first level by level)
  local all; all=$(ps -e -o pid=,ppid=)
  local frontier=$1 next p out=""
  while [ -n "$frontier" ]; do
    next=""
    for p in $frontier; do
      next+=" $(echo "$all" | awk -v pp="$p" '$2 == pp {print $1}' | tr '\n' ' ')"
    done
    next=$(echo $next)
    out+=" $next"
    frontier=$next
  done
  echo $out
}

stop_pid() {  # stop_pid NAME PID: SIGTERM, wait up to 10 s, then SIGKILL
  local name=$1 pid=$2 i
  alive "$pid" || return 0
  kill "$pid" 2>/dev/null || true
  for i in $(seq 50); do alive "$pid" || { log "stopped $name ($pid)"; return 0; }; sleep 0.2; done
  kill -9 "$pid" 2>/dev/null || true
  for i in $(seq 25); do alive "$pid" || { log "killed $name ($pid)"; return 0; }; sleep 0.2; done
  log "WARNING: $name ($pid) still alive"
}

stop() {
  local n pid r jobs
  # cancel every job first: a job "running" in the saved state but without processes would come back as
  # a ghost holding GPUs after the next start
  if running slurmctld && ctld_ok; then
    jobs=$(squeue -h -o %i 2>/dev/null | tr '\n' ' ')
    if [ -n "${jobs// /}" ]; then
      # shellcheck disable=SC2086
      scancel $jobs 2>/dev/null || true
      wait_for 15 "cancelled jobs to end" \
        bash -c '[ -z "$(squeue -h -t running,completing,configuring,suspended -o %i 2>/dev/null)" ]' \
        && log "cancelled jobs: $jobs" || true
    fi
  fi
  stop_pid slurmrestd "$(pid_of "$(pidfile slurmrestd)")"
  for n in "${NODES[@]}"; do stop_pid "slurmd $n" "$(pid_of "$(pidfile "$n")")"; done
  stop_pid slurmctld "$(pid_of "$(pidfile slurmctld)")"
  if [ -e "$D/run/munged.ours" ]; then
    # a cluster set up before each cluster had its own munged: it started the system's one
    stop_pid munged "$(pid_of /run/munge/munged.pid)"
    rm -f "$D/run/munged.ours"
  fi
  stop_pid munged "$(pid_of "$(pidfile munged)")"
  # whatever is left under our reapers: slurmstepd of running jobs and the job processes themselves
  if [ -s "$D/run/reapers" ]; then
    for r in $(sort -u "$D/run/reapers"); do
      alive "$r" || continue
      for pid in $(descendants "$r"); do alive "$pid" && kill -9 "$pid" 2>/dev/null || true; done
    done
    for r in $(sort -u "$D/run/reapers"); do
      for _ in $(seq 25); do alive "$r" || break; sleep 0.2; done
      alive "$r" && { log "WARNING: reaper $r still alive, killing it"; kill -9 "$r" 2>/dev/null || true; }
    done
    rm -f "$D/run/reapers"
  fi
  rm -f "$D/run/slurmrestd.pid"
  return 0
}

# ---------------------------------------------------------------------------------------------- status / env
status() {
  local ok=0 n
  for n in slurmctld "${NODES[@]}" slurmrestd; do
    if running "$n"; then echo "$n: running ($(pid_of "$(pidfile "$n")"))"; else echo "$n: NOT running"; ok=1; fi
  done
  munge_ok 2>/dev/null && echo "munge: ok" || { echo "munge: NOT ok"; ok=1; }
  if [ $ok = 0 ]; then
    ctld_ok && echo "slurmctld: answering" || { echo "slurmctld: NOT answering"; ok=1; }
    nodes_ok && echo "nodes: usable" || { echo "nodes: NOT usable"; ok=1; }
    sinfo -h -o '  partition %P: %T, gres %G' 2>/dev/null || true
  fi
  if [ $ok = 0 ]; then
    local code; code=$(rest_http_code "$(token 2>/dev/null)")
    [ "$code" = 200 ] && echo "slurmrestd: answering on 127.0.0.1:$REST_PORT" \
      || { echo "slurmrestd: HTTP $code"; ok=1; }
  fi
  return $ok
}

env_lines() {
  ctld_ok || die "cluster not running (run '$0 start')"
  local t; t=$(token)
  [ -n "$t" ] || die "scontrol token failed"
  echo "export SZB_SLURM_URL=http://127.0.0.1:$REST_PORT"
  echo "export SZB_SLURM_TOKEN=$t"
  echo "export SZB_SLURM_USER=$TOKEN_USER"
  echo "export SZB_SLURM_DIR=$D"
  echo "export SLURM_CONF=$SLURM_CONF"
  # its ports too: a later `start` with these lines (a test restarting a daemon) must not take
  # another cluster's from the caller's environment
  echo "export SZB_SLURM_REST_PORT=$REST_PORT"
  echo "export SZB_SLURMCTLD_PORT=$CTLD_PORT"
  echo "export SZB_SLURMD_PORT=$SLURMD_PORT"
}

wipe() { stop; rm -rf "$D"; log "removed $D"; }

case "${1:-}" in
  install) do_install ;;
  start) start ;;
  stop) stop ;;
  status) status ;;
  env) env_lines ;;
  wipe) wipe ;;
  *) echo "usage: $0 install|start|stop|status|env|wipe" >&2; exit 2 ;;
esac
