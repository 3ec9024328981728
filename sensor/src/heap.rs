//! The sensor's heap after start-up: what was freed goes back to the kernel.
//!
//! Loading the eBPF program parses the kernel's BTF (several megabytes) for its CO-RE
//! relocations, and the initial `/proc` scan reads every process; both free what they built.
//! glibc keeps freed heap pages mapped for later use, so without a trim they stay in the
//! sensor's RSS for its whole life (about 10 MB of a 28 MB sensor, measured in
//! docs/BENCHMARKS.md). [`release_freed`] asks glibc to return them (`malloc_trim`), once
//! each start-up phase is over; nothing in use is touched.
//!
//! `unsafe` here is the one foreign call, which takes no pointer and has no precondition.
#![allow(unsafe_code)]

/// Returns freed heap memory to the kernel (glibc's `malloc_trim(0)`); a no-op on other C
/// libraries. `what` names the phase that just ended, for the debug log.
pub fn release_freed(what: &str) {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: malloc_trim takes a size and touches only the allocator's free lists.
        let released = unsafe { libc::malloc_trim(0) };
        tracing::debug!(
            message = "Freed heap returned to the kernel.",
            after = what,
            released = released != 0
        );
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    let _ = what;
}

#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
mod tests {
    use super::*;

    /// Resident bytes of this process.
    fn resident() -> u64 {
        let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
        let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
        pages * 4096
    }

    /// Freed chunks between live ones stay resident until trimmed: a start-up phase that built
    /// and freed 64 MiB of small allocations, keeping one in 1,024 (as a scan that keeps a few
    /// entries does), leaves most of it mapped; the trim gives it back.
    #[test]
    fn freed_heap_between_live_allocations_goes_back_to_the_kernel() {
        let built: Vec<Box<[u8; 64]>> = (0..1 << 20).map(|i| Box::new([i as u8; 64])).collect();
        let kept: Vec<Box<[u8; 64]>> = built
            .into_iter()
            .enumerate()
            .filter_map(|(i, b)| (i % 1024 == 0).then_some(b))
            .collect();
        let before = resident();
        release_freed("a test");
        let after = resident();
        assert!(
            before.saturating_sub(after) > 32 << 20,
            "resident {before} bytes before the trim, {after} after"
        );
        assert!(kept
            .iter()
            .enumerate()
            .all(|(i, b)| b[0] == (i * 1024) as u8));
    }
}
