#!/usr/bin/env bash
# Installs the Debian packages carapace needs, idempotently.
#   deploy/install-deps.sh build   what `cargo build` needs (protoc for the CRI protobufs)
#   deploy/install-deps.sh run     build + what the daemon uses at run time (CNI plugins, iptables)
#   deploy/install-deps.sh test    run + what the end-to-end tests drive (prometheus, registry, skopeo,
#                                  systemd-analyze for the unit, criu for checkpoints, runc and runsc
#                                  (gVisor) for the runtime-handler tests, g++ for the fuzz targets,
#                                  ...), and
#                                  Python grpcio (a CRI client on grpc-core) in its own venv,
#                                  /opt/carapace-test/venv
# Packages already present are not fetched again; services that packages ship are never started
# (a policy-rc.d refuses them), so an install leaves no daemon behind and binds no port.
set -euo pipefail

mode=${1:-test}
build=(protobuf-compiler gcc libc6-dev make pkg-config)
run=(containernetworking-plugins iptables iproute2 util-linux)
# runc, runsc: the runtime-handler tests run pods through them; g++: libFuzzer (C++) in the fuzz
# targets' build.
test=(prometheus docker-registry skopeo busybox-static curl iputils-ping apache2-utils python3 python3-venv systemd criu runc runsc g++ e2fsprogs)
# Debian's python3-grpcio (1.51) sends `localhost` as a unix socket's :authority; grpc-core 1.57+
# sends the socket's path, which the e2e tests need to see. From PyPI, into a venv of Debian's
# python3, so nothing of the system's Python changes.
grpcio_venv=/opt/carapace-test/venv
grpcio_version=1.85

# Makes the venv with grpcio $grpcio_version in it, unless it is there already (then this is one
# import, well under a second).
grpcio() {
  if "$grpcio_venv/bin/python3" -c "import grpc, sys; sys.exit(not grpc.__version__.startswith('$grpcio_version.'))" 2>/dev/null; then
    return 0
  fi
  if [ "$(id -u)" != 0 ]; then
    echo "install-deps: Python grpcio $grpcio_version missing from $grpcio_venv; run as root to install it" >&2
    return 1
  fi
  echo "install-deps: installing Python grpcio $grpcio_version into $grpcio_venv"
  /usr/bin/python3 -m venv "$grpcio_venv"
  "$grpcio_venv/bin/pip" install -q --disable-pip-version-check "grpcio==$grpcio_version.*"
}

case "$mode" in
  build) want=("${build[@]}") ;;
  run) want=("${build[@]}" "${run[@]}") ;;
  test) want=("${build[@]}" "${run[@]}" "${test[@]}") ;;
  *) echo "usage: $0 build|run|test" >&2; exit 2 ;;
esac

missing=()
for p in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  if [ "$mode" = test ]; then grpcio; fi
  exit 0
fi

if [ "$(id -u)" != 0 ]; then
  echo "install-deps: missing packages ${missing[*]}; run as root to install them" >&2
  exit 1
fi

echo "install-deps: installing ${missing[*]}"
policy=/usr/sbin/policy-rc.d
made_policy=0
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' >"$policy"
  chmod 0755 "$policy"
  made_policy=1
fi
trap '[ "$made_policy" = 1 ] && rm -f "$policy"' EXIT

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
if [ "$mode" = test ]; then grpcio; fi
