//! The process's malloc settings.
//!
//! Training allocates and frees tensors of a few hundred KiB to a few MiB on every step. glibc's
//! malloc serves each of those with its own `mmap` (above `M_MMAP_THRESHOLD`) and unmaps it when
//! freed, so the next step faults every page back in: about 175,000 page faults and 0.5 s of
//! system time (about a seventh of the CPU) in `mpcl bench --only throughput`. Raising the mmap
//! and trim thresholds keeps freed buffers in the heap for reuse: 17x fewer faults, system time
//! about 0.04 s, the same peak memory (NOTES.md, session 5). mimalloc did less (system time 0.19 s)
//! and doubled the peak memory. Other platforms keep their allocator's defaults.

/// Largest allocation still served from the heap rather than by its own `mmap`.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: libc::c_int = 64 << 20;
/// Free memory at the top of the heap kept before it is returned to the kernel.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const TRIM_THRESHOLD: libc::c_int = 128 << 20;

/// Sets glibc's thresholds; call before any thread starts. A failure only costs speed, so it
/// is ignored.
pub fn keep_freed_buffers() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `mallopt` only changes malloc's tuning parameters; it is called once at start-up
    // before other threads exist, with documented parameter names and positive values.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
        libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD);
    }
}
