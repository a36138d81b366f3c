#!/usr/bin/env bash
# `ray up` for real, on one Linux machine: the on-prem cluster shape (Ray's `local` provider over SSH) on
# loopback, a small ablation study through it, `ray down`, and a check that nothing is left running.
#
#   sudo bash tests/cluster/rayup_e2e.sh [TEMPLATE]      # default: experiments/clusters/loopback.yaml.in
#
# What it does: installs openssh-server, rsync and acl if missing; starts a private sshd bound to 127.0.0.2
# and 127.0.0.3 only; creates a dedicated unprivileged user with a fresh key (so that `ray down`'s
# `ray stop` can only touch that user's Ray); renders TEMPLATE into a cluster config; then
#   ray up → the head (127.0.0.2, 0 CPUs) and a worker (127.0.0.3, 1 CPU + 1 fake GPU) → checks →
#   refused without the token → ray attach → ray dashboard (SSH tunnel; HTTP refused without the token) +
#   ray job submit --working-dir (a dry run of the study) → ray submit experiments/ablation.py
#   (experiments/grids/cluster-smoke.yaml, storage in the user's home: the path both nodes reach) →
#   ray down → no Ray process of the user left.
# Exits non-zero on the first failure, with the log of the failing step. Cleans up after itself on any
# exit (sshd, the user and its home, the ACLs it added); KEEP=1 keeps the user and its home for a look.
# Needs root and Debian/Ubuntu (apt). Environment: PYTHON (interpreter with ray and the project's
# dependencies, e.g. a virtual environment's bin/python as .ci/run gives it; default python3), RAYUP_USER (default proda-rayup), WORK (launcher scratch and logs,
# default /tmp/proda-rayup-e2e), RAYUP_PORT (GCS port, default 6390; the next ports are derived from it).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
TEMPLATE=${1:-$REPO/experiments/clusters/loopback.yaml.in}
RUSER=${RAYUP_USER:-proda-rayup}
WORK=${WORK:-/tmp/proda-rayup-e2e}
PORT=${RAYUP_PORT:-6390}
DASHBOARD_PORT=$((PORT + 1900)) CLIENT_PORT=$((PORT + 2)) TUNNEL_PORT=$((PORT + 1901))
AGENT_PORT_HEAD=$((PORT + 46000)) AGENT_PORT_WORKER=$((PORT + 46002))
CLUSTER=proda-rayup-e2e
HEAD_IP=127.0.0.2 WORKER_IP=127.0.0.3

T0=$(date +%s%N)
STEP_T0=$T0
TIMINGS=()
now_s() { awk -v a="$1" -v b="$(date +%s%N)" 'BEGIN { printf "%.1f", (b - a) / 1e9 }'; }
log() { printf '[%7ss] %s\n' "$(now_s "$T0")" "$*"; }
step() { STEP_T0=$(date +%s%N); log "── $*"; }
done_step() { TIMINGS+=("$(printf '%-28s %7ss' "$1" "$(now_s "$STEP_T0")")"); log "ok: $1 ($(now_s "$STEP_T0") s)"; }
fail() {
  log "FAILED: $*"
  [ -n "${2:-}" ] && [ -f "$2" ] && { echo "---- last lines of $2"; tail -n 60 "$2"; echo "----"; }
  exit 1
}

[ "$(id -u)" = 0 ] || { echo "rayup_e2e.sh: run as root (it installs packages, starts sshd, adds a user)" >&2; exit 2; }
[ -f "$TEMPLATE" ] || { echo "rayup_e2e.sh: template '$TEMPLATE' does not exist" >&2; exit 2; }
PYEXE=$("${PYTHON:-python3}" -c 'import sys; print(sys.executable)')
PYBIN=$(dirname "$PYEXE")
RAY=$PYBIN/ray
[ -x "$RAY" ] || { echo "rayup_e2e.sh: no 'ray' next to $PYEXE (set PYTHON to an interpreter with Ray)" >&2; exit 2; }

SSHD_PID="" UP_DONE="" TUNNEL_PID="" H=""
ACL_FILE=$WORK.acl   # outside WORK: survives the rm -rf of a rerun until its ACLs are undone

stop_user_ray() {  # Ray's own `ray stop` as the dedicated user: cannot reach anyone else's processes
  id "$RUSER" >/dev/null 2>&1 || return 0
  su - "$RUSER" -s /bin/bash -c "RAY_TMPDIR=\$HOME/.ray_tmp '$RAY' stop --force" >/dev/null 2>&1 || true
}
undo_acls() {
  [ -f "$ACL_FILE" ] || return 0
  while read -r d; do
    setfacl -x "u:$RUSER" "$d" 2>/dev/null && log "ACL for $RUSER removed from $d"
    setfacl -x m:: "$d" 2>/dev/null || true   # the mask too, unless other named entries still need it
  done < "$ACL_FILE"
  rm -f "$ACL_FILE"
}
kill_pidfile() {  # a previous run's sshd, by the pid it wrote, only if it is an sshd
  local f=$1
  [ -s "$f" ] || return 0
  local pid; pid=$(cat "$f")
  if [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = sshd ]; then kill "$pid" && log "stale sshd $pid stopped"; fi
}
remove_user() {
  id "$RUSER" >/dev/null 2>&1 || return 0
  stop_user_ray
  local pids; pids=$(pgrep -u "$RUSER" || true)   # leftover processes of the dedicated user only
  [ -n "$pids" ] && { kill $pids 2>/dev/null || true; sleep 1; kill -9 $pids 2>/dev/null || true; }
  userdel -r "$RUSER" >/dev/null 2>&1 || userdel "$RUSER" || true
}

cleanup() {
  local rc=$?
  set +e
  [ -n "$TUNNEL_PID" ] && kill -- -"$TUNNEL_PID" 2>/dev/null
  if [ -n "$UP_DONE" ]; then   # a failure between `ray up` and `ray down`: take the cluster down anyway
    log "cleanup: ray down"
    "$RAY" down -y "$WORK/cluster.yaml" >"$WORK/down-cleanup.log" 2>&1
  fi
  if [ "$rc" != 0 ] && [ -n "$H" ] && [ -d "$H/.ray_tmp/ray/session_latest/logs" ]; then
    echo "---- remote Ray logs (errors) in $H/.ray_tmp/ray/session_latest/logs"
    tail -n 15 "$H"/.ray_tmp/ray/session_latest/logs/{monitor.err,raylet.err,gcs_server.err} 2>/dev/null
    echo "----"
  fi
  [ -n "$SSHD_PID" ] && kill "$SSHD_PID" 2>/dev/null && log "cleanup: sshd $SSHD_PID stopped"
  undo_acls
  if [ "${KEEP:-0}" = 1 ]; then stop_user_ray; log "cleanup: KEEP=1, user $RUSER and $H kept"
  else remove_user; log "cleanup: user $RUSER and its home removed"; fi
  log "logs: $WORK"
  [ "$rc" = 0 ] && log "PASSED" || log "FAILED (exit $rc)"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ------------------------------------------------------------------------------------------------
step "packages, leftovers of an earlier run"
missing=()
[ -x /usr/sbin/sshd ] || missing+=(openssh-server)
command -v rsync >/dev/null || missing+=(rsync)
command -v setfacl >/dev/null || missing+=(acl)
if [ ${#missing[@]} -gt 0 ]; then
  log "apt-get install ${missing[*]}"
  # keep the package scripts from starting the system's sshd on 0.0.0.0:22 (it would take our port)
  policy_added=""
  [ -e /usr/sbin/policy-rc.d ] || { printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod 755 /usr/sbin/policy-rc.d; policy_added=1; }
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"; } \
    > "$WORK.apt.log" 2>&1 || { [ -n "$policy_added" ] && rm -f /usr/sbin/policy-rc.d; fail "apt-get install" "$WORK.apt.log"; }
  [ -n "$policy_added" ] && rm -f /usr/sbin/policy-rc.d
fi
kill_pidfile "$WORK/ssh/sshd.pid"
undo_acls
remove_user
rm -rf "$WORK"; mkdir -p "$WORK/ssh" "$WORK/launcher_tmp"; chmod 700 "$WORK" "$WORK/ssh"
done_step "packages"

# ------------------------------------------------------------------------------------------------
step "dedicated user $RUSER, keys, interpreter access"
useradd -m -s /bin/bash "$RUSER"
usermod -p '*' "$RUSER"       # no password, but not locked: sshd with `UsePAM no` refuses locked accounts
H=$(getent passwd "$RUSER" | cut -d: -f6)
ssh-keygen -q -t ed25519 -N '' -C "$RUSER@rayup-e2e" -f "$WORK/ssh/id_ed25519"
ssh-keygen -q -t ed25519 -N '' -f "$WORK/ssh/host_key"
install -d -o "$RUSER" -g "$RUSER" -m 700 "$H/.ssh"
install -o "$RUSER" -g "$RUSER" -m 600 "$WORK/ssh/id_ed25519.pub" "$H/.ssh/authorized_keys"
# the interpreter, or the base interpreter of a virtual environment (its symlink target and standard
# library), may live in root's home (pyenv): execute-only ACLs on the directories the user cannot traverse,
# undone on exit
for path in "$PYEXE" "$(readlink -f "$PYEXE")" "$("$PYEXE" -c 'import sys; print(sys.base_prefix)')"; do
  d=""
  for part in $(echo "$path" | tr '/' ' '); do
    d="$d/$part"; [ -d "$d" ] || continue
    if ! su "$RUSER" -s /bin/sh -c "test -x '$d'"; then
      setfacl -m "u:$RUSER:--x" "$d"; echo "$d" >> "$ACL_FILE"; log "ACL u:$RUSER:--x on $d (removed on exit)"
    fi
  done
done
su - "$RUSER" -s /bin/bash -c "'$PYEXE' -c 'import ray, torch, yaml'" > "$WORK/python-check.log" 2>&1 \
  || fail "user $RUSER cannot run $PYEXE with ray and torch" "$WORK/python-check.log"
done_step "user"

# ------------------------------------------------------------------------------------------------
step "sshd on $HEAD_IP and $WORKER_IP only"
cat > "$WORK/ssh/sshd_config" <<EOF
Port 22
ListenAddress $HEAD_IP
ListenAddress $WORKER_IP
HostKey $WORK/ssh/host_key
PidFile $WORK/ssh/sshd.pid
AllowUsers $RUSER
PermitRootLogin no
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
AllowTcpForwarding local
X11Forwarding no
PrintMotd no
MaxStartups 50:30:100
MaxSessions 50
EOF
mkdir -p /run/sshd
/usr/sbin/sshd -t -f "$WORK/ssh/sshd_config" 2> "$WORK/sshd.log" || fail "sshd config" "$WORK/sshd.log"
/usr/sbin/sshd -f "$WORK/ssh/sshd_config" -E "$WORK/sshd.log" || fail "sshd start" "$WORK/sshd.log"
for _ in $(seq 50); do [ -s "$WORK/ssh/sshd.pid" ] && break; sleep 0.1; done
SSHD_PID=$(cat "$WORK/ssh/sshd.pid" 2>/dev/null) || fail "sshd did not start (port 22 on $HEAD_IP taken?)" "$WORK/sshd.log"
SSH=(ssh -i "$WORK/ssh/id_ed25519" -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null
     -o LogLevel=ERROR)
for ip in $HEAD_IP $WORKER_IP; do
  "${SSH[@]}" "$RUSER@$ip" true 2>> "$WORK/sshd.log" || fail "ssh $RUSER@$ip" "$WORK/sshd.log"
done
log "sshd pid $SSHD_PID; key login works on both addresses"
done_step "sshd"

# ------------------------------------------------------------------------------------------------
step "cluster token and config"
(umask 077; "$PYEXE" -c 'import secrets; print(secrets.token_hex(32), end="")' > "$WORK/auth_token")
sed -e "s|@CLUSTER@|$CLUSTER|g" -e "s|@USER@|$RUSER|g" -e "s|@KEY@|$WORK/ssh/id_ed25519|g" \
    -e "s|@PYBIN@|$PYBIN|g" -e "s|@REPO@|$REPO|g" -e "s|@TOKEN@|$WORK/auth_token|g" -e "s|@PORT@|$PORT|g" \
    -e "s|@DASHBOARD_PORT@|$DASHBOARD_PORT|g" -e "s|@CLIENT_PORT@|$CLIENT_PORT|g" \
    -e "s|@AGENT_PORT_HEAD@|$AGENT_PORT_HEAD|g" -e "s|@AGENT_PORT_WORKER@|$AGENT_PORT_WORKER|g" \
    "$TEMPLATE" > "$WORK/cluster.yaml"
! grep -v '^ *#' "$WORK/cluster.yaml" | grep '@[A-Z_]*@' || fail "unfilled fields in $WORK/cluster.yaml"
CFG=$WORK/cluster.yaml
# the launcher's own Ray state stays in WORK; the v1 autoscaler is the one that drives the local provider
export RAY_TMPDIR=$WORK/launcher_tmp TMPDIR=$WORK/launcher_tmp RAY_USAGE_STATS_ENABLED=0 RAY_UP_enable_autoscaler_v2=0
done_step "config"

# ------------------------------------------------------------------------------------------------
step "ray up $CFG"
UP_DONE=1
"$RAY" up -y --no-config-cache --disable-usage-stats "$CFG" > "$WORK/up.log" 2>&1 || fail "ray up" "$WORK/up.log"
done_step "ray up"

step "the worker joins; the head has 0 CPUs, the worker 1 CPU + 1 GPU"
cat > "$WORK/nodes_check.py" <<'EOF'
import os, sys, time
import ray
import proda
ray.init(address="auto", log_to_driver=False)
want = {"127.0.0.2": (0, 0), "127.0.0.3": (1, 1)}  # node ip → (CPU, GPU)
for _ in range(90):  # the head's autoscaler starts the worker after `ray up` returns
    nodes = {n["NodeManagerAddress"]: n["Resources"] for n in ray.nodes() if n["Alive"]}
    got = {ip: (nodes.get(ip, {}).get("CPU", 0), nodes.get(ip, {}).get("GPU", 0)) for ip in want}
    if got == want:
        break
    time.sleep(1)
print("NODES", got, "proda from", proda.__file__)
assert got == want, f"expected {want}"
assert proda.__file__ == os.path.expanduser("~/proda/proda/__init__.py"), "proda is not the synced checkout"
print("NODES_OK")
EOF
"$RAY" submit "$CFG" "$WORK/nodes_check.py" > "$WORK/nodes.log" 2>&1 || fail "cluster nodes" "$WORK/nodes.log"
grep -q NODES_OK "$WORK/nodes.log" || fail "cluster nodes" "$WORK/nodes.log"
log "$(grep '^NODES ' "$WORK/nodes.log")"
done_step "nodes"

step "token authentication: a client without the token is refused"
t=$(date +%s%N)
# 2 connection attempts instead of Ray's 20
RAY_AUTH_MODE=disabled RAY_gcs_server_port_wait_time_s=2 timeout 60 "$PYEXE" -c \
  "import ray; ray.init(address='$HEAD_IP:$PORT'); print('CONNECTED')" > "$WORK/noauth.log" 2>&1 || true
! grep -q CONNECTED "$WORK/noauth.log" || fail "a driver without the token connected to the cluster" "$WORK/noauth.log"
grep -q InvalidAuthToken "$WORK/noauth.log" || fail "a driver without the token: no InvalidAuthToken refusal" "$WORK/noauth.log"
RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH=$WORK/auth_token timeout 60 "$RAY" status --address "$HEAD_IP:$PORT" \
  > "$WORK/status.log" 2>&1 || fail "ray status with the token" "$WORK/status.log"
log "refused without the token ($(now_s "$t") s); ray status with it: $(grep -E '^ *[0-9.]+/[0-9.]+ (CPU|GPU)$' "$WORK/status.log" | xargs)"
done_step "token auth"

step "ray attach (a shell on the head)"
printf 'echo ATTACH_OK $(whoami)@$(hostname -I 2>/dev/null | tr -d " ") $(command -v ray)\nexit\n' \
  | timeout 60 "$RAY" attach "$CFG" > "$WORK/attach.log" 2>&1 || true
grep -q "ATTACH_OK $RUSER" "$WORK/attach.log" || fail "ray attach" "$WORK/attach.log"
done_step "ray attach"

step "ray dashboard (SSH tunnel to the head's localhost-only dashboard) + ray job submit"
setsid "$RAY" dashboard -p "$TUNNEL_PORT" --remote-port "$DASHBOARD_PORT" "$CFG" > "$WORK/dashboard.log" 2>&1 &
TUNNEL_PID=$!   # its own process group: the ssh it starts goes with it
URL=http://127.0.0.1:$TUNNEL_PORT
cat > "$WORK/http_check.py" <<'EOF'
import json, sys, time, urllib.error, urllib.request
url, token = sys.argv[1], open(sys.argv[2]).read().strip()
def get(path, auth):
    req = urllib.request.Request(url + path, headers={"Authorization": f"Bearer {token}"} if auth else {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, ""
for _ in range(60):  # the tunnel comes up
    try:
        status, body = get("/api/authentication_mode", False)
        break
    except OSError:
        time.sleep(0.5)
else:
    sys.exit("the tunnel did not come up")
mode = json.loads(body)["authentication_mode"]
without, _ = get("/api/jobs/", False)
with_token, _ = get("/api/jobs/", True)
print("HTTP mode", mode, "/api/jobs/ without token", without, "with token", with_token)
assert mode == "token" and without in (401, 403) and with_token == 200
print("HTTP_OK")
EOF
"$PYEXE" "$WORK/http_check.py" "$URL" "$WORK/auth_token" > "$WORK/http.log" 2>&1 || fail "dashboard through the tunnel" "$WORK/http.log"
log "$(grep '^HTTP mode' "$WORK/http.log")"
# the form docs/cluster.md gives for long studies: the checkout as the job's working dir, relative paths
RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH=$WORK/auth_token timeout 120 "$RAY" job submit --address "$URL" \
  --working-dir "$REPO" -- python experiments/ablation.py --grid experiments/grids/cluster-smoke.yaml \
  --address auto --dry-run > "$WORK/job.log" 2>&1 || fail "ray job submit" "$WORK/job.log"
grep -q "study 'cluster-smoke'" "$WORK/job.log" || fail "ray job submit: no plan printed" "$WORK/job.log"
grep -q "succeeded" "$WORK/job.log" || fail "ray job submit: the job did not succeed" "$WORK/job.log"
kill -- -"$TUNNEL_PID" 2>/dev/null; wait "$TUNNEL_PID" 2>/dev/null || true; TUNNEL_PID=""
done_step "ray dashboard + job submit"

step "ray submit experiments/ablation.py (experiments/grids/cluster-smoke.yaml)"
STUDY=$H/studies/cluster-smoke
# --gpus-per-worker 0: the worker's GPU is fake, and a TorchTrainer asked for GPUs sets up NCCL, which fails
# without CUDA ("ProcessGroupNCCL is only supported with GPUs"). The head has 0 CPUs, so the study can only
# train on the worker, as on a real cluster (there: --gpus-per-worker 1).
"$RAY" submit "$CFG" "$REPO/experiments/ablation.py" -- \
  --grid "$H/proda/experiments/grids/cluster-smoke.yaml" --storage "$H/studies" --address auto \
  --gpus-per-worker 0 --cpus-per-worker 1 > "$WORK/study.log" 2>&1 || fail "ray submit (the study)" "$WORK/study.log"
grep -qE '^\| *source-only *\| *[0-9]' "$WORK/study.log" || fail "the study printed no source-only row" "$WORK/study.log"
[ -f "$STUDY/results.parquet" ] || fail "no $STUDY/results.parquet in the shared storage" "$WORK/study.log"
grep -rqs '"node_ip": "127.0.0.3"' "$STUDY/tune" || fail "no trial ran on the worker 127.0.0.3" "$WORK/study.log"
awk '/^### Ablation/ { on = 1 } /^### Per-class/ { on = 0 } on && NF' "$WORK/study.log"
log "$(grep -E '^study .* wall time' "$WORK/study.log")"
done_step "ray submit (study)"

# ------------------------------------------------------------------------------------------------
step "ray down"
"$RAY" down -y "$CFG" > "$WORK/down.log" 2>&1 || fail "ray down" "$WORK/down.log"
UP_DONE=""
left=""
for _ in $(seq 20); do
  left=$(pgrep -u "$RUSER" -af 'raylet|gcs_server|ray::|ray/dashboard|ray/autoscaler|ray/_private|default_worker' || true)
  [ -z "$left" ] && break
  sleep 0.5
done
[ -z "$left" ] || fail "Ray processes of $RUSER left after ray down: $left"
log "no Ray process of $RUSER left"
done_step "ray down"

echo
echo "timings (total $(now_s "$T0") s):"
printf '  %s\n' "${TIMINGS[@]}"
