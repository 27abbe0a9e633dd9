//! Keeping the daemon's heap small between bursts of work.
//!
//! glibc gives every thread that allocates its own arena and keeps freed memory inside each; a
//! pull or a list of many pods leaves megabytes a node agent then holds while idle. One arena
//! shared by the few threads of the daemon (two workers and the blocking pool, mostly waiting on
//! the kernel) costs no measurable contention, and an occasional trim hands freed pages back.

use std::time::Duration;

/// How often freed heap memory is given back to the kernel.
const TRIM_EVERY: Duration = Duration::from_secs(10);

/// Allocations from this size up get their own mapping, returned to the kernel when freed.
const MMAP_THRESHOLD: i32 = 128 * 1024;

/// Call before any thread is started.
pub fn limit_arenas() {
    // SAFETY: mallopt only sets a tunable of the allocator; called while the process has a single
    // thread, so no allocation runs concurrently with the change.
    unsafe {
        nix::libc::mallopt(nix::libc::M_ARENA_MAX, 1);
        // A fixed threshold: glibc otherwise raises it to the largest buffer ever freed, after
        // which a pull's big buffers come from the heap and leave it fragmented for good.
        nix::libc::mallopt(nix::libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
    }
}

/// How long after READY start-up counts as over: the servers' tasks (gRPC, metrics, streaming,
/// admin) make their first polls, which run set-up code too, within milliseconds of it.
const START_UP_TAIL: Duration = Duration::from_millis(200);

/// Once start-up is over: hands back the heap start-up freed and the daemon's mappings of the
/// code it ran (see [`carapace_runtime::release_idle_memory`]), so an idle daemon holds what
/// serving needs rather than what starting needed. Released at READY itself, the servers' first
/// polls brought 1.7 of the 2.2 MiB back (idle RSS 2.5 MiB against 1.3). `checks` (the node's
/// checks, run once after READY) run meanwhile and are given back the same way when they end:
/// their probes and registry pings left an idle daemon at 3.3–3.9 MiB instead of 1.6.
pub async fn release_start_up(checks: impl std::future::Future<Output = ()>) {
    let tail = async {
        tokio::time::sleep(START_UP_TAIL).await;
        carapace_runtime::release_idle_memory();
    };
    tokio::join!(tail, checks);
    carapace_runtime::release_idle_memory();
}

/// Gives the pages of free heap chunks back to the kernel, now and then, for the daemon's life.
pub async fn trim_periodically() {
    let mut tick = tokio::time::interval(TRIM_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        trim_heap();
    }
}

/// Hands the pages of the heap's free chunks back to the kernel.
fn trim_heap() {
    // SAFETY: malloc_trim takes the allocator's own locks and touches only its free chunks.
    unsafe {
        nix::libc::malloc_trim(0);
    }
}
