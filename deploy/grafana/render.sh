#!/usr/bin/env bash
# Regenerates docs/dashboard.png from a real run, by hand (not in CI); as root, from anywhere.
#   deploy/grafana/render.sh [SECONDS]     (default 150)
# The ignored e2e test `render_dashboard_data` (e2e/tests/dashboard.rs) starts the debug daemon
# with a local registry, a pod network and a pod, runs Prometheus against it (with the alert
# rules) and keeps the node busy for SECONDS: pulls (one failing), containers started, run to
# exit and stopped, execs, a NotFound call, a pod started and removed. It then runs every
# dashboard query over the run (query_range, 2 s steps) into a JSON file, and render.py plots
# the main panels with Debian's python3-matplotlib. Installs what it needs (the test packages and
# python3-matplotlib) first.
set -euo pipefail
cd "$(dirname "$0")/../.."
seconds=${1:-150}
bash deploy/install-deps.sh test
python=/usr/bin/python3 # Debian's, where python3-matplotlib is installed
"$python" -c 'import matplotlib' 2>/dev/null ||
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-matplotlib >/dev/null

# The same static build `make test` makes, so the daemon is the one the e2e tests run.
export PATH=$HOME/.cargo/bin:$PATH
host=$(rustc -vV | sed -n 's/^host: //p')
export CARGO_BUILD_TARGET=$host
export "CARGO_TARGET_$(echo "$host" | tr 'a-z.-' 'A-Z__')_RUSTFLAGS=-C target-feature=+crt-static -C relocation-model=static"
export CARAPACE_BIN=$PWD/target/$host/debug/carapace
cargo build --bin carapace

data=$(mktemp --suffix=.json)
trap 'rm -f "$data"' EXIT
DASHBOARD_DATA=$data DASHBOARD_SECONDS=$seconds \
  cargo test -p carapace-e2e --test dashboard render_dashboard_data -- --ignored --nocapture
"$python" deploy/grafana/render.py "$data" docs/dashboard.png
echo "render.sh: wrote docs/dashboard.png ($(stat -c %s docs/dashboard.png) bytes)"
