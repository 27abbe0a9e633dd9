//! Links the `carapace` binary as a position-dependent executable.
//!
//! Every container has a monitor process re-executed from this binary. In a PIE, the dynamic
//! loader writes about 370 KiB of pointer tables (`.data.rel.ro`) in each process at start, which
//! makes that many private dirty pages per container. A fixed-address executable has them
//! resolved at link time, so they stay clean pages shared through the page cache. The shared
//! libraries (libc) stay position-independent and randomized; the trade is ASLR for the
//! executable's own code, as with containerd's and runc's Go binaries.
fn main() {
    println!("cargo:rustc-link-arg-bins=-no-pie");
}
