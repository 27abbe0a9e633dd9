//! Deliberate crashes at named steps of the mutating CRI calls, for the crash-point suite
//! (`e2e/tests/crash_points.rs`, `docs/crash-points.md`). This crate owns only that: it never
//! changes what a step does, and a release build (no `debug_assertions`) has no crash point at
//! all, every function here being empty.
//!
//! `CARAPACE_CRASH_AT=<Rpc>:<N>`, read once by [`init`] at the daemon's start, arms it: the first
//! [`rpc`] call naming `<Rpc>` starts the count, every [`hit`] from then on counts, on any thread
//! (the pods' record writer counts too), and the `N`-th kills the process with SIGKILL after one
//! line on stderr naming `N` and the point. Nothing unwinds and no destructor runs, as when the
//! kernel's OOM killer or a node's operator ends the daemon.
//!
//! Unarmed (the variable unset, or its call not yet made), a crash point is one relaxed atomic
//! load.

/// The line the crash writes to stderr starts with this, then `<N> <point>`.
pub const MARK: &str = "crash point";

#[cfg(debug_assertions)]
mod armed {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

    /// The call and step to crash at, from the environment.
    static TARGET: OnceLock<(String, u64)> = OnceLock::new();
    /// Set by the first call of the target RPC; every point counts from then on.
    static ARMED: AtomicBool = AtomicBool::new(false);
    /// Whether a target was given at all: an unarmed [`super::rpc`] costs one load too.
    static WANTED: AtomicBool = AtomicBool::new(false);
    static COUNT: AtomicU64 = AtomicU64::new(0);

    pub fn init() {
        let Some((rpc, n)) = std::env::var("CARAPACE_CRASH_AT")
            .ok()
            .and_then(|v| {
                v.rsplit_once(':')
                    .map(|(r, n)| (r.to_owned(), n.parse().ok()))
            })
            .and_then(|(r, n)| Some((r, n?)))
        else {
            return;
        };
        if TARGET.set((rpc, n)).is_ok() {
            WANTED.store(true, Ordering::Release);
        }
    }

    pub fn rpc(name: &str) {
        if !WANTED.load(Ordering::Relaxed) {
            return;
        }
        if TARGET.get().is_some_and(|(rpc, _)| rpc == name) {
            ARMED.store(true, Ordering::SeqCst);
        }
    }

    pub fn hit(point: &str, detail: &str) {
        if !ARMED.load(Ordering::Relaxed) {
            return;
        }
        let n = COUNT.fetch_add(1, Ordering::SeqCst) + 1;
        let Some((rpc, target)) = TARGET.get() else {
            return;
        };
        if n != *target {
            return;
        }
        if detail.is_empty() {
            eprintln!("{} {n} {rpc}: {point}", super::MARK);
        } else {
            eprintln!("{} {n} {rpc}: {point} ({detail})", super::MARK);
        }
        // SIGKILL, not abort(): no core file, no handler, the same end a kill -9 makes.
        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
        std::process::abort();
    }
}

/// Reads `CARAPACE_CRASH_AT` (once, at the daemon's start).
#[inline(always)]
pub fn init() {
    #[cfg(debug_assertions)]
    armed::init();
}

/// The start of the mutating call `name` (`"RunPodSandbox"`): arms the count if it is the target.
#[inline(always)]
pub fn rpc(name: &str) {
    #[cfg(debug_assertions)]
    armed::rpc(name);
    #[cfg(not(debug_assertions))]
    let _ = name;
}

/// A step just taken (after a mkdir, mount, write, rename or spawn): may be where the daemon dies.
#[inline(always)]
pub fn hit(point: &str) {
    #[cfg(debug_assertions)]
    armed::hit(point, "");
    #[cfg(not(debug_assertions))]
    let _ = point;
}

/// [`hit`] with a detail that varies at run time (a CNI plugin's type, a layer's digest).
#[inline(always)]
pub fn hit_in(point: &str, detail: &str) {
    #[cfg(debug_assertions)]
    armed::hit(point, detail);
    #[cfg(not(debug_assertions))]
    let _ = (point, detail);
}
