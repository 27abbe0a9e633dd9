#!/usr/bin/env bash
# Builds the fuzz targets with libFuzzer's coverage instrumentation and runs them, one after
# another, each for the given seconds (docs/fuzzing.md).
#   fuzz/run.sh [TARGET|all] [SECONDS]      default: all, 120
#   fuzz/run.sh build                       build only
# The seeds in corpus/TARGET are read, never written: what a run finds goes to a working corpus
# under $CARGO_TARGET_DIR/corpus/TARGET, kept between runs; crashes go to artifacts/TARGET/.
set -euo pipefail
cd "$(dirname "$0")"
fuzz_dir=$PWD
target=${1:-all}
secs=${2:-120}
host=$(rustc -vV | sed -n 's/^host: //p')
# Not the workspace's target dir: the instrumentation flags would rebuild everything there.
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/tmp/fuzz-target}
# The workspace's static-build settings (Makefile, /tmp/cenv.sh) do not apply to libFuzzer.
unset CARGO_BUILD_TARGET RUSTFLAGS CARGO_ENCODED_RUSTFLAGS
unset "CARGO_TARGET_$(echo "$host" | tr 'a-z.-' 'A-Z__')_RUSTFLAGS"
# What cargo-fuzz passes, without a sanitizer: the crates under test are safe Rust, so panics
# (assertions, overflow, slicing) are the crashes to find, and the runs are several times faster.
flags="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4"
flags+=" -Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table"
flags+=" -Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Cdebug-assertions -Coverflow-checks"
# Naming the target keeps the flags off build scripts and proc macros.
RUSTFLAGS=$flags cargo build --release --target "$host" --bins
bin_dir=$CARGO_TARGET_DIR/$host/release
[ "$target" = build ] && exit 0

targets=$(sed -n 's/^name = "\(.*\)"$/\1/p' Cargo.toml | grep -v '^carapace-fuzz$')
[ "$target" = all ] || targets=$target

run() {
    local t=$1 work=$CARGO_TARGET_DIR/corpus/$1 log=$CARGO_TARGET_DIR/logs/$1.log
    mkdir -p "$work" "$fuzz_dir/artifacts/$t" "$CARGO_TARGET_DIR/logs"
    local cmd=("$bin_dir/$t" "$work" "$fuzz_dir/corpus/$t" -max_total_time="$secs" -timeout=10
        -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="$fuzz_dir/artifacts/$t/")
    echo "== $t: ${secs}s, log $log"
    local rc=0
    if [ "$t" = unpack ]; then
        # The unpacker writes as root what the input says: run it in a mount namespace where
        # everything is read-only but a fresh tmpfs for its roots and the corpus and artifact
        # folders, so a bug that escapes the layer directory cannot touch the machine.
        local tmp=$CARGO_TARGET_DIR/unpack-tmp
        mkdir -p "$tmp"
        CARAPACE_FUZZ_TMP=$tmp unshare -m --propagation private sh -ec '
            tmp=$1 work=$2 art=$3; shift 3
            mount -t tmpfs -o size=1g tmpfs "$tmp"
            mount --bind "$work" "$work"
            mount --bind "$art" "$art"
            mount -o remount,bind,ro /
            exec "$@"' sh "$tmp" "$work" "$fuzz_dir/artifacts/$t" "${cmd[@]}" >"$log" 2>&1 || rc=$?
    else
        "${cmd[@]}" >"$log" 2>&1 || rc=$?
    fi
    grep -E '^#[0-9]+[[:space:]]+DONE|stat::number_of_executed_units|^==[0-9]+== ERROR|panicked at|^artifact_prefix|Test unit written' "$log" || true
    echo "   corpus files: $(ls "$work" | wc -l), exit $rc"
    return $rc
}

status=0
for t in $targets; do
    run "$t" || status=1
done
exit $status
