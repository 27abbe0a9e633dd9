#!/usr/bin/env bash
# carapace vs containerd, side by side, on this machine: one command.
#   bench/run.sh [carapace-bench flags, e.g. --rounds 6 --pods 50 --only pod-start,list]
#   BENCH_RUNTIMES=carapace bench/run.sh ...   carapace alone (no ratios), for a quick look
#   BENCH_CARAPACE_BIN=/path/to/carapace bench/run.sh ...   another build of the daemon (before/after);
#     the tree's own daemon is then not built
#   bench/run.sh --only soak --soak-cycles 1000, --only load --load-clients 50 ...   see docs/soak.md
# Starts a private registry filled with images built here, Debian's containerd + runc and carapace,
# both with the same CNI conflist, registry configuration and cgroup driver, runs every workload
# against both (A B A B) and prints the table. Everything lives under one temp dir and is removed
# at the end, whatever happens.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

bash deploy/install-deps.sh test
for p in containerd runc; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || {
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends containerd runc >/dev/null
    break
  }
done
# The daemon as `make build` makes it (static), unless another is named; the bench client as a
# plain release build.
[ -n "${BENCH_CARAPACE_BIN:-}" ] || make -s build CARGO="cargo -q"
cargo build --release -q -p carapace-bench
HOST=$(rustc -vV | sed -n 's/^host: //p')
BIN="${CARGO_TARGET_DIR:-target}/$HOST/release"
BENCH_BIN="${CARGO_TARGET_DIR:-target}/release"

W=$(mktemp -d /tmp/carapace-bench.XXXXXX)
BRIDGE=cbench0
pids=()
cleanup() {
  set +e
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null; done
  # The daemons the bench restarted with their pods running (not children of this script).
  pkill -TERM -f -- "--config $W/(carapace|containerd).toml" 2>/dev/null
  sleep 2
  pkill -KILL -f -- "--config $W/(carapace|containerd).toml" 2>/dev/null
  # containerd's shims and the containers they hold outlive containerd by design.
  pkill -KILL -f "containerd-shim.*$W" 2>/dev/null
  # carapace's monitors and containers outlive carapace by design too: a pass that failed half-way
  # (a daemon that did not come back from its restart, seen once in 12 restarts with 250 pods)
  # leaves its pods. Each container's processes by its cgroup, then the cgroups.
  pkill -KILL -f -- "$W/run/carapace/" 2>/dev/null
  ids=()
  for c in "$W"/run/carapace/containers/*/; do
    id=$(basename "$c")
    [[ $id =~ ^[0-9a-f]{64}$ ]] && ids+=("$id")
  done
  for id in "${ids[@]}"; do xargs -r kill -KILL < "/sys/fs/cgroup/pids/$id/cgroup.procs" 2>/dev/null; done
  [ ${#ids[@]} -gt 0 ] && sleep 1
  for id in "${ids[@]}"; do
    for h in /sys/fs/cgroup/*/"$id"; do rmdir "$h" 2>/dev/null; done
  done
  for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null; done
  grep -o " $W[^ ]*" /proc/self/mountinfo | sort -r | while read -r m; do umount -l "$m"; done
  ip link del "$BRIDGE" 2>/dev/null
  rm -rf "$W" /var/lib/cni/networks/carapace-bench /tmp/carapace-bench-logs
  # containerd's parent cgroup of its pods (no pod of the bench gives one of its own); rmdir only
  # takes it when empty, so a containerd running beside us keeps its own.
  for c in /sys/fs/cgroup/*/k8s.io; do rmdir "$c" 2>/dev/null; done
  # The soak's parent of its pods' cgroups (bench/src/soak.rs), with what a failed pass left.
  for c in /sys/fs/cgroup/*/carapace-bench-soak; do
    [ -d "$c" ] && rmdir "$c"/*/* "$c"/* "$c" 2>/dev/null
  done
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
REG=127.0.0.1:$(free_port)
METRICS=127.0.0.1:$(free_port)

echo "bench: registry on $REG, work dir $W" >&2
cat > "$W/registry.yml" <<YAML
version: 0.1
log: { level: error }
storage: { filesystem: { rootdirectory: $W/registry }, delete: { enabled: true } }
http: { addr: $REG }
YAML
docker-registry serve "$W/registry.yml" >"$W/registry.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do curl -fsS "http://$REG/v2/" >/dev/null 2>&1 && break; sleep 0.1; done

push() { # name tag mkimage-args...
  local name=$1 tag=$2; shift 2
  python3 bench/mkimage.py "$W/oci-$name" "$tag" "$@"
  skopeo copy -q --dest-tls-verify=false "oci:$W/oci-$name:$tag" "docker://$REG/bench/$name:$tag"
}
push busybox 1
push pause 1 --cmd sleep 2147483647
push big 1 --filler-layers 4 --filler-mib 20

mkdir -p "$W/certs.d/$REG" "$W/net.d"
printf 'server = "http://%s"\n[host."http://%s"]\n  capabilities = ["pull", "resolve"]\n' "$REG" "$REG" \
  > "$W/certs.d/$REG/hosts.toml"
cat > "$W/net.d/10-bench.conflist" <<JSON
{
  "cniVersion": "1.0.0",
  "name": "carapace-bench",
  "plugins": [
    { "type": "bridge", "bridge": "$BRIDGE", "isGateway": true, "ipMasq": false, "hairpinMode": true,
      "ipam": { "type": "host-local", "ranges": [[{ "subnet": "10.99.0.0/16" }]], "routes": [{ "dst": "0.0.0.0/0" }] } },
    { "type": "portmap", "capabilities": { "portMappings": true } }
  ]
}
JSON

# Both runtimes keep their state (bundles, sandboxes, shim and monitor sockets) on a tmpfs, as
# /run is on a node, and their root (images, snapshots, metadata) on disk.
mkdir -p "$W/run"
mount -t tmpfs -o mode=0711 tmpfs "$W/run"

# containerd, configured like carapace: same CNI, same registry config, cgroupfs, overlayfs.
restrict=false
(echo -999 > /proc/self/oom_score_adj) 2>/dev/null || restrict=true
cat > "$W/containerd.toml" <<TOML
version = 2
root = "$W/containerd/root"
state = "$W/run/containerd"
[grpc]
  address = "$W/containerd.sock"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$REG/bench/pause:1"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  # The pods' network namespaces under the work dir too, so the cleanup unmounts any left.
  netns_mounts_under = "$W/run/netns"
  restrict_oom_score_adj = $restrict
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$W/net.d"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "$W/certs.d"
TOML
RUNTIMES=${BENCH_RUNTIMES:-carapace,containerd}
if [[ ,$RUNTIMES, == *,containerd,* ]]; then
  containerd --config "$W/containerd.toml" >"$W/containerd.log" 2>&1 &
  pids+=($!)
  CONTAINERD_PID=$!
fi

cat > "$W/carapace.toml" <<TOML
root = "$W/carapace/root"
state = "$W/run/carapace"
[grpc]
address = "$W/carapace.sock"
[metrics]
address = "$METRICS"
[cni]
conf_dir = "$W/net.d"
bin_dirs = ["/usr/lib/cni"]
[registry]
config_path = "$W/certs.d"
TOML
# The OCI runtimes a pass may name for carapace's pods (`--handler carapace=runc`): rows per
# handler. containerd's pods always run through its runc shim (no gVisor shim is packaged).
for rt in runc:/usr/sbin/runc runsc:/usr/bin/runsc; do
  [ -x "${rt#*:}" ] || continue
  printf '[runtimes.%s]\nruntime_path = "%s"\n' "${rt%%:*}" "${rt#*:}" >>"$W/carapace.toml"
  # gVisor on the node kernel's network stack in the pod's namespace (docs/cri.md).
  if [ "${rt%%:*}" = runsc ]; then echo 'runtime_args = ["--network=host"]' >>"$W/carapace.toml"; fi
done
"${BENCH_CARAPACE_BIN:-$BIN/carapace}" serve --config "$W/carapace.toml" >"$W/carapace.log" 2>&1 &
pids+=($!)
CARAPACE_PID=$!

targets=()
for r in ${RUNTIMES//,/ }; do
  pid_var=${r^^}_PID
  targets+=(--endpoint "$r=unix://$W/$r.sock" --pid "$r=${!pid_var}")
done
for s in "$W/carapace.sock" ${CONTAINERD_PID:+"$W/containerd.sock"}; do
  for _ in $(seq 200); do [ -S "$s" ] && break; sleep 0.05; done
  [ -S "$s" ] || { echo "bench: $s never appeared" >&2; tail "$W"/*.log >&2; exit 1; }
done
sleep 1

echo "bench: $(nproc) cores, kernel $(uname -r), $(date -u +%Y-%m-%dT%H:%MZ)" >&2
"$BENCH_BIN/carapace-bench" \
  "${targets[@]}" \
  --image "$REG/bench/busybox:1" --pull-image "$REG/bench/big:1" \
  --work-dir "$W" --bridge "$BRIDGE" --network carapace-bench \
  "$@" | tee "$W/table.md"

# The same pods with no runtime at all (bench/pod-floor.sh), after the runtimes' passes: what
# the memory row's figures would be for a runtime that added nothing. BENCH_FLOOR=0 skips it.
pods=100 memory=true
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
  case ${args[i]} in
    --pods) pods=${args[i + 1]:-100} ;;
    --only) [[ ,${args[i + 1]:-}, == *,memory,* ]] || memory=false ;;
  esac
done
if [ "${BENCH_FLOOR:-1}" = 1 ] && $memory && [ "$pods" -gt 0 ]; then
  echo "pod floor: $pods pods made by hand (CNI bridge + runc, no runtime daemon, no monitor or shim)" >&2
  bash bench/pod-floor.sh "$pods" 1 | tee "$W/floor.txt" >&2
  # What each runtime adds per pod above that floor: the memory row less the floor, as a row of
  # the table (its p95 columns are the memory row's p95 less the floor).
  floor=$(grep -o 'no runtime: [0-9.-]*' "$W/floor.txt" | awk '{s += $3; n++} END {if (n) printf "%.3f", s / n}')
  [ -n "$floor" ] && awk -F'|' -v f="$floor" '
    $2 == " memory " {
      split($3, c50, " "); split($4, c95, " ")
      if (split($5, d50, " ") == 0) { # carapace alone
        printf "| memory added per pod above the no-runtime floor (%.2f MiB/pod) | %.2f MiB/pod | %.2f MiB/pod |\n",
          f, c50[1] - f, c95[1] - f
        next
      }
      split($6, d95, " ")
      printf "| memory added per pod above the no-runtime floor (%.2f MiB/pod) | %.2f MiB/pod | %.2f MiB/pod | %.2f MiB/pod | %.2f MiB/pod | %s |\n",
        f, c50[1] - f, c95[1] - f, d50[1] - f, d95[1] - f,
        (d50[1] - f > 0) ? sprintf("%.3f", (c50[1] - f) / (d50[1] - f)) : "-"
    }' "$W/table.md"
fi
