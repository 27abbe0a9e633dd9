#!/usr/bin/env bash
# The memory a pod costs the node with no runtime at all, beside which the bench's "memory per
# pod" row reads: what any runtime pays for its pods and what it adds on top.
#   bench/pod-floor.sh [PODS] [PASSES]     (as root; defaults 100 pods, 2 passes)
# Each pod is what the bench's pods are made of, built by hand: a network namespace wired by the
# CNI bridge plugin (host-local addresses), and a container run detached by runc (overlay root
# from busybox, its own pid/mount/ipc/uts namespaces, cgroups, /dev, runc's default spec) running
# `sleep`. No daemon, no monitor or shim, no pause process. Memory is read as the bench reads it:
# MemTotal - MemAvailable once the node settles, with the pods against the mean of the readings
# before they came and after they went.
# The first pass runs on a node whose slab caches hold no freed pod objects yet; later passes
# reuse what the previous one freed, as the bench's later passes do.
set -euo pipefail
N=${1:-100}
PASSES=${2:-2}
for t in runc ip busybox python3; do
  command -v "$t" >/dev/null || { echo "pod-floor: needs $t (bench/run.sh installs runc)" >&2; exit 1; }
done
T=$(mktemp -d /var/tmp/carapace-floor.XXXXXX)
BRIDGE=cfloor0
NET=carapace-floor
made=0
cleanup() {
  set +e
  for i in $(seq "$made"); do runc --root "$T/runc" delete -f "floor$i" >/dev/null 2>&1; done
  for i in $(seq "$made"); do
    umount "$T/c$i/rootfs" 2>/dev/null
    cni DEL "$i" 2>/dev/null
    ip netns del "floor$i" 2>/dev/null
  done
  made=0
  for c in /sys/fs/cgroup/*/carapace-floor /sys/fs/cgroup/unified/carapace-floor; do
    [ -d "$c" ] && find "$c" -depth -type d -exec rmdir {} + 2>/dev/null
  done
  ip link del "$BRIDGE" 2>/dev/null
  rm -rf "/var/lib/cni/networks/$NET"
}
trap 'cleanup; rm -rf "$T"' EXIT

conf='{"cniVersion":"1.0.0","name":"'$NET'","type":"bridge","bridge":"'$BRIDGE'","isGateway":true,
 "ipMasq":false,"hairpinMode":true,"ipam":{"type":"host-local","ranges":[[{"subnet":"10.96.0.0/16"}]],
 "routes":[{"dst":"0.0.0.0/0"}]}}'
cni() {
  CNI_COMMAND=$1 CNI_CONTAINERID=floor$2 CNI_NETNS=/run/netns/floor$2 CNI_IFNAME=eth0 \
    CNI_PATH=/usr/lib/cni /usr/lib/cni/bridge <<<"$conf" >/dev/null
}
mib() { awk '/^MemTotal:/{t=$2} /^MemAvailable:/{a=$2} END{printf "%.1f", (t-a)/1024}' /proc/meminfo; }
# Read as the bench reads it: a second apart until three readings agree within 0.5 MiB (20 s at
# most), as the kernel frees torn-down pods' objects in the background.
used_mib() {
  local last now steady=0
  last=$(mib)
  for _ in $(seq 20); do
    sleep 1
    now=$(mib)
    if awk -v a="$now" -v b="$last" 'BEGIN { exit !(a - b < 0.5 && b - a < 0.5) }'; then
      steady=$((steady + 1))
    else
      steady=0
    fi
    last=$now
    [ "$steady" -ge 2 ] && break
  done
  echo "$last"
}

mkdir -p "$T/lower/bin" "$T/lower/proc" "$T/lower/sys" "$T/lower/dev" "$T/lower/tmp"
cp "$(command -v busybox)" "$T/lower/bin/busybox"
ln -s busybox "$T/lower/bin/sleep"
(cd "$T" && runc spec)
for p in $(seq "$PASSES"); do
  before=$(used_mib)
  for i in $(seq "$N"); do
    made=$i
    ip netns add "floor$i"
    cni ADD "$i"
    b=$T/c$i
    mkdir -p "$b/rootfs" "$b/upper" "$b/work"
    mount -t overlay overlay -o "lowerdir=$T/lower,upperdir=$b/upper,workdir=$b/work" "$b/rootfs"
    python3 - "$T/config.json" "$b/config.json" "$i" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
s["process"]["terminal"] = False
s["process"]["args"] = ["sleep", "3600"]
s["root"]["readonly"] = False
for n in s["linux"]["namespaces"]:
    if n["type"] == "network":
        n["path"] = "/run/netns/floor" + sys.argv[3]
s["linux"]["cgroupsPath"] = "/carapace-floor/c" + sys.argv[3]
json.dump(s, open(sys.argv[2], "w"))
PY
    (cd "$b" && runc --root "$T/runc" run -d "floor$i" </dev/null >/dev/null 2>&1)
  done
  sleep 2
  after=$(used_mib)
  running=$(runc --root "$T/runc" list -q | wc -l)
  cleanup
  rm -rf "$T"/c[0-9]*
  # Against the mean of the readings before and after, as the bench does: drift cancels.
  end=$(used_mib)
  awk -v a="$before" -v b="$after" -v e="$end" -v n="$N" -v p="$p" -v r="$running" 'BEGIN {
    printf "pass %d: %d pods running, node memory used per pod with no runtime: %.2f MiB (%s -> %s -> %s MiB)\n", p, r, (b - (a + e) / 2) / n, a, b, e }'
done
