//! Freeing off the core what takes long to free: a large map gives its pages back to the
//! system at ~0.6 µs a page (a 6 MB map: ~1 ms), and the last descriptor of an unlinked
//! file frees its blocks. A short-lived helper thread at the lowest priority drops it; when
//! none can start, the core does.

/// Drops `value` on a helper thread (on the calling one if no thread can start).
pub fn off_core<T: Send + 'static>(value: T) {
    let spawned = std::thread::Builder::new()
        .name("rinha-free".into())
        .stack_size(64 << 10)
        .spawn(move || {
            crate::journal::behind_the_cores();
            drop(value)
        });
    if let Err(error) = spawned {
        // The closure, and `value` with it, was dropped here.
        tracing::debug!(%error, "no helper thread to free on; freed on the core");
    }
}
