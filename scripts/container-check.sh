#!/usr/bin/env bash
# Build docker/Dockerfile.gpu on a plain Debian 12 root filesystem and run it under a real OCI
# runtime (runc), as the platform would: runai-entry is the exec-form ENTRYPOINT (PID 1), the
# command is `sh -c "python3 train.py"` (a shell that does not exec, as in the Run:ai guide), and
# `runc kill <id> TERM` is the preemption. Passes when python saved a checkpoint and the
# container exited 1 (requeue).
#
#   sudo scripts/container-check.sh        # exit 0 pass, 1 fail, 77 cannot run here (says why)
#
# Needs root, podman (build only: `podman run` fails in VMs that refuse setrlimit), runc and
# debootstrap. The Debian root filesystem is cached in $RIE_CACHE (first build ~1 min).
set -euo pipefail

cd "$(dirname "$0")/.."
cache=${RIE_CACHE:-/var/tmp/runai-entry-container}
base=localhost/runai-entry-base:bookworm
image=localhost/runai-entry-check:latest
id=runai-entry-check-$$
work=$(mktemp -d)
podman=(podman --cgroup-manager=cgroupfs)

skip() { echo "container-check: cannot run here: $*" >&2; exit 77; }
fail() { echo "container-check: FAIL: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || skip "needs root (runc, debootstrap)"
for tool in podman runc debootstrap; do
    command -v "$tool" >/dev/null || skip "$tool is not installed (Debian: apt-get install podman runc debootstrap)"
done

cleanup() {
    runc kill "$id" KILL 2>/dev/null || true
    runc delete --force "$id" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

# The base: a Debian 12 root filesystem with python3 and pip, imported as an image.
if ! "${podman[@]}" image exists "$base"; then
    if [ ! -x "$cache/rootfs/usr/bin/python3" ]; then
        rm -rf "$cache/rootfs" && mkdir -p "$cache"
        debootstrap --variant=minbase --include=python3,python3-pip bookworm "$cache/rootfs" \
            http://deb.debian.org/debian >"$work/debootstrap.log" 2>&1 \
            || skip "debootstrap failed (no Debian mirror?): $(tail -n 1 "$work/debootstrap.log")"
    fi
    tar -C "$cache/rootfs" -c . | "${podman[@]}" import - "$base" >/dev/null
fi

# The image, from the repository's Dockerfile. Behind a TLS-inspecting proxy pip must trust what
# the host trusts: the host's CA bundle is mounted for the build only.
certs=()
[ -f /etc/ssl/certs/ca-certificates.crt ] \
    && certs=(-v /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro)
"${podman[@]}" build --isolation chroot "${certs[@]}" --build-arg "BASE_IMAGE=$base" \
    -f docker/Dockerfile.gpu -t "$image" . >"$work/build.log" 2>&1 \
    || fail "the image did not build: $(tail -n 3 "$work/build.log")"

# An OCI bundle: the image's filesystem and a spec without what these VMs refuse (rlimits,
# cgroup limits and the cgroup namespace). The job is the ENTRYPOINT plus our command.
mkdir -p "$work/bundle/rootfs" "$work/job"
container=$("${podman[@]}" create "$image")
"${podman[@]}" export "$container" | tar -C "$work/bundle/rootfs" -x
"${podman[@]}" rm "$container" >/dev/null
entrypoint=$("${podman[@]}" image inspect --format '{{json .Config.Entrypoint}}' "$image")
cat >"$work/job/train.py" <<'EOF'
import os, pickle, signal, sys, time
directory = os.environ["RUNAI_ENTRY_CHECKPOINT_DIR"]
stop = False
def on_term(*_):
    global stop
    stop = True
signal.signal(signal.SIGTERM, on_term)
print("ready", flush=True)
step = 0
while not stop:
    step += 1
    time.sleep(0.01)
os.makedirs(directory, exist_ok=True)
temp = os.path.join(directory, ".step.tmp")
with open(temp, "wb") as f:
    pickle.dump({"step": step}, f, protocol=4)
    f.flush()
    os.fsync(f.fileno())
os.replace(temp, os.path.join(directory, f"step-{step:08d}.pt"))
print("saved step", step, flush=True)
sys.exit(0)  # as many scripts do: runai-entry still reports the preemption as 1
EOF
(cd "$work/bundle" && runc spec)
python3 - "$work" "$entrypoint" <<'EOF'
import json, sys
work, entrypoint = sys.argv[1], json.loads(sys.argv[2])
path = f"{work}/bundle/config.json"
spec = json.load(open(path))
spec["process"].pop("rlimits", None)
spec["process"]["terminal"] = False
spec["process"]["args"] = [*entrypoint, "sh", "-c", "python3 /job/train.py"]
spec["process"]["env"] += ["RUNAI_ENTRY_CHECKPOINT_DIR=/job/ckpt", "RUNAI_ENTRY_LOG_FORMAT=json",
                           "RUNAI_ENTRY_GRACE_PERIOD=10s"]
spec["root"]["readonly"] = False
spec["linux"].pop("resources", None)
spec["linux"]["namespaces"] = [n for n in spec["linux"]["namespaces"] if n["type"] != "cgroup"]
spec["mounts"].append({"destination": "/job", "type": "bind", "source": f"{work}/job",
                       "options": ["rbind", "rw"]})
json.dump(spec, open(path, "w"), indent=1)
EOF

# Run it, wait for the job, preempt it, and see what the platform would see.
(
    cd "$work/bundle"
    code=0
    runc run "$id" >"$work/out" 2>&1 || code=$?  # errexit would end this subshell at exit 1
    echo "$code" >"$work/status"
) &
for _ in $(seq 600); do
    grep -q '^ready' "$work/out" 2>/dev/null && break
    [ -e "$work/status" ] && fail "the container exited before the job was ready: $(cat "$work/out")"
    sleep 0.1
done
grep -q '^ready' "$work/out" || fail "the job never became ready: $(cat "$work/out")"
runc kill "$id" TERM
for _ in $(seq 300); do [ -e "$work/status" ] && break; sleep 0.1; done
[ -e "$work/status" ] || fail "the container did not exit within 30 s of SIGTERM: $(cat "$work/out")"
status=$(cat "$work/status")
cat "$work/out"
saved=$(find "$work/job/ckpt" -name 'step-*.pt' 2>/dev/null | head -n 1)
[ -n "$saved" ] || fail "python saved no checkpoint"
[ "$status" = 1 ] || fail "the container exited $status, not 1"
echo "container-check: pass: runc kill TERM -> python saved $(basename "$saved") -> the container exited 1"
