#!/usr/bin/env bash
# Regenerates src/link-order.txt: the functions and constants carapace uses while it starts and answers a
# kubelet's first calls, in the order the linker should lay them out (`make build` hands the file
# to the linker).
#
# Why: the kernel maps a program's text 64 KiB around each page fault, so an idle daemon's RSS is
# the number of 64 KiB windows start-up touched, and start-up code is scattered over the whole
# executable. Laid out together it fills a few windows.
#
# How: a build with symbols is started from a copy whose pages are out of the page cache, with
# read-ahead off on its disk, so each fault reads exactly the page it needs and the pages present
# afterwards are the pages that ran. Every function overlapping such a page is listed.
# Needs root (read-ahead setting, page map). Names that later builds no longer have are ignored
# by the linker, so a stale file only loses its effect: rerun this after dependency updates.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
bash deploy/install-deps.sh test
HOST=$(rustc -vV | sed -n 's/^host: //p')
HOST_VAR=$(echo "$HOST" | tr 'a-z.-' 'A-Z__')
OUT=src/link-order.txt

# `make build`'s binary with its symbol table kept (same flags, so the same names), laid out by
# the current list if there is one: each run then sees start-up code gathered and lists it more
# tightly than from a scattered layout, where a touched page drags in its unrelated neighbours.
export CARGO_TARGET_DIR=target/link-order
export "CARGO_TARGET_${HOST_VAR}_RUSTFLAGS=-C target-feature=+crt-static -C relocation-model=static"
order_args=()
[ -s "$OUT" ] && order_args=(-C "link-arg=-Wl,--symbol-ordering-file=$PWD/$OUT" -C link-arg=-Wl,--no-warn-symbol-ordering)
CARGO_PROFILE_RELEASE_STRIP=false cargo rustc -q --release --target "$HOST" --bin carapace -- "${order_args[@]}"
W=$(mktemp -d /var/tmp/carapace-order.XXXXXX) # on disk: a tmpfs copy is always all in memory
cp "$CARGO_TARGET_DIR/$HOST/release/carapace" "$W/carapace"

DEV=$(lsblk -no PKNAME "$(findmnt -no SOURCE --target "$W")" 2>/dev/null || true)
[ -n "$DEV" ] || DEV=$(basename "$(findmnt -no SOURCE --target "$W")")
RA=/sys/block/$DEV/queue/read_ahead_kb
old_ra=$(cat "$RA")
pid=
cleanup() {
  set +e
  [ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
  echo "$old_ra" >"$RA"
  rm -rf "$W"
}
trap cleanup EXIT

mkdir -p "$W/net.d" "$W/certs.d"
# A node has a CNI network configured; loading it is part of start-up.
cp deploy/cni/10-carapace-bridge.conflist "$W/net.d/"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat >"$W/config.toml" <<TOML
root = "$W/root"
state = "$W/state"
[grpc]
address = "$W/carapace.sock"
[metrics]
address = "127.0.0.1:$port"
[cni]
conf_dir = "$W/net.d"
bin_dirs = ["/usr/lib/cni"]
[registry]
config_path = "$W/certs.d"
TOML

sync "$W/carapace"
python3 -c 'import os,sys; fd=os.open(sys.argv[1], os.O_RDONLY); os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)' "$W/carapace"
echo 0 >"$RA"
"$W/carapace" serve --config "$W/config.toml" >"$W/log" 2>&1 &
pid=$!
for _ in $(seq 200); do [ -S "$W/carapace.sock" ] && break; sleep 0.05; done
[ -S "$W/carapace.sock" ] || { cat "$W/log" >&2; exit 1; }
sleep 1
# What a kubelet asks first (each an empty request: gRPC's 5-byte frame of an empty message), and
# a Prometheus scrape.
for m in RuntimeService/Version RuntimeService/Status RuntimeService/ListPodSandbox \
  RuntimeService/ListContainers RuntimeService/ListPodSandboxStats RuntimeService/ListContainerStats \
  ImageService/ListImages ImageService/ImageFsInfo; do
  printf '\0\0\0\0\0' | curl -fsS --http2-prior-knowledge --unix-socket "$W/carapace.sock" \
    -H 'content-type: application/grpc' -H 'te: trailers' --data-binary @- \
    -o /dev/null "http://localhost/runtime.v1.$m"
done
curl -fsS "http://127.0.0.1:$port/metrics" >/dev/null
sleep 1

# Present pages of the executable's text, from /proc/<pid>/pagemap (bit 63: present).
python3 - "$pid" "$W/carapace" "$OUT" <<'PY'
import struct, subprocess, sys
pid, exe, out = sys.argv[1], sys.argv[2], sys.argv[3]
ranges = []
for line in open(f"/proc/{pid}/maps"):
    f = line.split()
    # Code and read-only data (constants, strings, tables); written pages are the process's own.
    if len(f) >= 6 and f[5] == exe and "w" not in f[1]:
        lo, hi = (int(x, 16) for x in f[0].split("-"))
        ranges.append((lo, hi))
present = []
with open(f"/proc/{pid}/pagemap", "rb") as pm:
    for lo, hi in ranges:
        pm.seek(lo // 4096 * 8)
        data = pm.read((hi - lo) // 4096 * 8)
        for i in range(len(data) // 8):
            (e,) = struct.unpack_from("<Q", data, i * 8)
            if e >> 63:
                present.append(lo + i * 4096)
syms = []
nm = subprocess.run(["nm", "-S", "--defined-only", exe], capture_output=True, text=True, check=True)
for line in nm.stdout.splitlines():
    f = line.split()
    if len(f) == 4 and f[2] in "tTwWrRvV":
        syms.append((int(f[0], 16), int(f[1], 16), f[3]))
syms.sort()
pages = set(present)
names, seen = [], set()
for addr, size, name in syms:
    first, last = addr // 4096 * 4096, (addr + max(size, 1) - 1) // 4096 * 4096
    if any(p in pages for p in range(first, last + 1, 4096)) and name not in seen:
        seen.add(name)
        names.append(name)
with open(out + ".tmp", "w") as o:
    o.write("\n".join(names) + "\n")
import os
os.replace(out + ".tmp", out)
mapped = sum(hi - lo for lo, hi in ranges)
print(f"link-order: {len(present)} of {mapped // 4096} read-only pages used; {len(names)} symbols -> {out}",
      file=sys.stderr)
PY
