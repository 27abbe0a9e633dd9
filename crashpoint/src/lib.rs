//! Deliberate crashes at named steps of the mutating CRI calls, for the crash-point suite
//! (`e2e/tests/crash_points.rs`, `docs/crash-points.md`). This crate owns only that: it never
//! changes what a step does, and a release build (no `debug_assertions`) has no crash point at
//! all, every function here being empty.
//!
//! `CARAPACE_CRASH_AT`, read once by [`init`] at the daemon's start, arms it; the first [`rpc`]
//! call naming its `<Rpc>` starts the count, and every [`hit`] from then on counts, on any thread
//! (the pods' record writer counts too):
//! - `<Rpc>:<N>`: the `N`-th point reached kills the daemon;
//! - `<Rpc>:<K>:<point>`: the `K`-th time the point named so (`sandbox: dir made`, or with its
//!   detail, `cni: plugin ADD done (bridge)`) is reached kills it. What a walk uses: which point
//!   comes `N`-th can change from run to run (a background thread's step, a parent cgroup that
//!   another pod made or took away meanwhile), a point's name does not;
//! - `<Rpc>:trace`: nothing dies, each point reached is logged (`crash point passed <N> ...`).
//!
//! The kill is SIGKILL after one line on stderr, `crash point <N> <Rpc>: <point>`. Nothing
//! unwinds and no destructor runs, as when the OOM killer or a node's operator ends the daemon.
//!
//! Unarmed (the variable unset, or its call not yet made), a crash point is one relaxed atomic
//! load.

/// The lines written to stderr start with this.
pub const MARK: &str = "crash point";

/// Where an armed daemon dies.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(not(debug_assertions), allow(dead_code))]
enum At {
    Step(u64),
    Point(u64, String),
    Trace,
}

#[cfg(debug_assertions)]
mod armed {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

    use super::At;

    /// The call and the step to crash at, from the environment.
    static TARGET: OnceLock<(String, At)> = OnceLock::new();
    /// Set by the first call of the target RPC; every point counts from then on.
    static ARMED: AtomicBool = AtomicBool::new(false);
    /// Whether a target was given at all: an unarmed [`super::rpc`] costs one load too.
    static WANTED: AtomicBool = AtomicBool::new(false);
    /// Points reached, and reached by the name targeted.
    static COUNT: AtomicU64 = AtomicU64::new(0);
    static NAMED: AtomicU64 = AtomicU64::new(0);

    pub fn init() {
        let Some(target) = std::env::var("CARAPACE_CRASH_AT")
            .ok()
            .as_deref()
            .and_then(super::parse)
        else {
            return;
        };
        if TARGET.set(target).is_ok() {
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
        let Some((rpc, at)) = TARGET.get() else {
            return;
        };
        let name = if detail.is_empty() {
            point.to_owned()
        } else {
            format!("{point} ({detail})")
        };
        let die = match at {
            At::Step(step) => n == *step,
            At::Point(k, p) => *p == name && NAMED.fetch_add(1, Ordering::SeqCst) + 1 == *k,
            At::Trace => {
                eprintln!("{} passed {n} {rpc}: {name}", super::MARK);
                false
            }
        };
        if !die {
            return;
        }
        eprintln!("{} {n} {rpc}: {name}", super::MARK);
        // SIGKILL, not abort(): no core file, no handler, the same end a kill -9 makes.
        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
        std::process::abort();
    }
}

/// `<Rpc>:<N>`, `<Rpc>:<K>:<point>` or `<Rpc>:trace` (see the crate's doc); steps and
/// occurrences count from 1. Anything else arms nothing.
#[cfg_attr(not(debug_assertions), allow(dead_code))]
fn parse(v: &str) -> Option<(String, At)> {
    let mut parts = v.splitn(3, ':');
    let rpc = parts.next().filter(|r| !r.is_empty())?;
    let second = parts.next()?;
    let at = match (second, parts.next()) {
        ("trace", None) => At::Trace,
        (n, None) => At::Step(n.parse().ok().filter(|&n| n > 0)?),
        (k, Some(point)) if !point.is_empty() => {
            At::Point(k.parse().ok().filter(|&k| k > 0)?, point.to_owned())
        }
        _ => return None,
    };
    Some((rpc.to_owned(), at))
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

/// [`hit`] with a detail that varies at run time (a CNI plugin's type, a file's name).
#[inline(always)]
pub fn hit_in(point: &str, detail: &str) {
    #[cfg(debug_assertions)]
    armed::hit(point, detail);
    #[cfg(not(debug_assertions))]
    let _ = (point, detail);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_target_is_a_call_and_a_step_or_a_named_point_or_a_trace() {
        let p = parse;
        assert_eq!(
            p("RunPodSandbox:3"),
            Some(("RunPodSandbox".into(), At::Step(3)))
        );
        assert_eq!(p("PullImage:trace"), Some(("PullImage".into(), At::Trace)));
        assert_eq!(
            p("RunPodSandbox:2:cni: plugin ADD done (bridge)"),
            Some((
                "RunPodSandbox".into(),
                At::Point(2, "cni: plugin ADD done (bridge)".into())
            ))
        );
        for bad in [
            "",
            "RunPodSandbox",
            "RunPodSandbox:",
            ":3",
            "RunPodSandbox:0",
            "X:-1",
            "X:y",
            "X:0:a point",
            "X:1:",
        ] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn unarmed_points_do_nothing() {
        // No CARAPACE_CRASH_AT read: the call arms nothing and every point passes.
        rpc("RunPodSandbox");
        for _ in 0..3 {
            hit("a step");
            hit_in("a step", "detail");
        }
    }
}
