#!/usr/bin/env bash
# A one-node SLURM cluster on localhost for tests/test_slurm.py: `cluster.sh start|stop`.
# Needs root and Debian's apt (installs slurm-wlm and munge if missing). Accounting is off,
# so the executor plugin must query job status with squeue (see profiles/slurm).
# `stop` removes /etc/slurm/slurm.conf again: with a config but no controller, every SLURM
# client (and so every Snakemake start, whose SLURM plugin runs `scontrol` on import) would
# hang for 10 s.
# `start` exits 3 where this machine cannot host the test cluster (SLURM or munge of its own,
# no package access): the test then skips, saying why. It touches nothing in that case.
set -euo pipefail
action=${1:?usage: cluster.sh start|stop}
state=${SLURM_TEST_STATE:-/tmp/sparsescale-slurm}
node=$(hostname -s)

conf=/etc/slurm/slurm.conf
marker="# written by sparsescale tests/slurm/cluster.sh"

stop() {
  for daemon in slurmd slurmctld munged; do
    pkill -x "$daemon" 2>/dev/null || true
  done
  if [[ -f $conf ]] && head -1 "$conf" | grep -qF "$marker"; then
    rm -f "$conf"
  fi
}

cannot() {
  echo "$*" >&2
  exit 3
}

if [[ $action == stop ]]; then
  stop
  exit 0
fi

# a machine's own SLURM or munge is left alone: stop() would kill its daemons
if [[ -f $conf ]] && ! head -1 "$conf" | grep -qF "$marker"; then
  cannot "$conf exists and is not ours; this machine runs SLURM of its own"
fi
if [[ ! -f $conf ]]; then
  for daemon in slurmd slurmctld munged; do
    if pgrep -x "$daemon" >/dev/null; then
      cannot "$daemon is running and was not started by this script"
    fi
  done
fi

if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
  echo "installing slurm-wlm and munge" >&2
  export DEBIAN_FRONTEND=noninteractive
  { apt-get update -q && apt-get install -y -q --no-install-recommends slurm-wlm munge; } >/dev/null ||
    cannot "could not install slurm-wlm and munge with apt-get (no package access?)"
fi

stop
mkdir -p "$state"/{spool/slurmd,spool/slurmctld,log} /etc/slurm /etc/munge /run/munge /var/log/munge /var/lib/munge
chown -R munge:munge /etc/munge /run/munge /var/log/munge /var/lib/munge
if [[ ! -s /etc/munge/munge.key ]]; then
  dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
  chown munge:munge /etc/munge/munge.key
  chmod 400 /etc/munge/munge.key
fi
runuser -u munge -- munged --force

memory_mb=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 * 3 / 4 ))
cat > "$conf" <<CONF
$marker
ClusterName=sparsescale-test
SlurmctldHost=$node
SlurmUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
ReturnToService=2
StateSaveLocation=$state/spool/slurmctld
SlurmdSpoolDir=$state/spool/slurmd
SlurmctldPidFile=$state/slurmctld.pid
SlurmdPidFile=$state/slurmd.pid
SlurmctldLogFile=$state/log/slurmctld.log
SlurmdLogFile=$state/log/slurmd.log
NodeName=$node NodeAddr=127.0.0.1 CPUs=$(nproc) RealMemory=$memory_mb State=UNKNOWN
PartitionName=debug Nodes=$node Default=YES MaxTime=INFINITE State=UP
CONF

slurmctld
slurmd
for _ in $(seq 30); do
  if sinfo -h -o %T 2>/dev/null | grep -qE '^(idle|mixed|allocated)'; then
    echo "slurm up: $(sinfo -h -o '%P %D %T %c cpus')" >&2
    exit 0
  fi
  sleep 1
done
echo "slurm did not come up; logs in $state/log" >&2
tail -20 "$state"/log/*.log >&2 || true
exit 1
