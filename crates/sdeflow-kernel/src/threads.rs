//! Where the framework's loops run: on a rayon worker.

/// A worker's stack: the main thread's (8 MiB), since whole commands run on workers.
pub const WORKER_STACK: usize = 8 << 20;

/// Builds rayon's global pool with [`WORKER_STACK`] stacks (its size from `RAYON_NUM_THREADS`
/// or the cores), for a binary whose commands run through [`on_workers`]. Call it early in
/// `main`; if a pool exists already, it is used as it is.
pub fn build_global_pool() {
    let _ = rayon::ThreadPoolBuilder::new()
        .stack_size(WORKER_STACK)
        .build_global();
}

/// Runs `f` on a rayon worker, or right here when this thread is one already.
///
/// Every parallel call made from a thread outside a pool (`par_iter`, `join`, candle's
/// parallel CPU ops) is handed to a worker and the caller sleeps until it is done: a wake-up
/// each way, tens to hundreds of microseconds on a VM, even with one thread, where the work
/// would have run in place. A training step or a sampling step makes dozens of them. The
/// loops of [`Pipeline`](crate::Pipeline) (sampling, likelihoods) and of the trainer, and the
/// `sdeflow` binary's commands, run through this, so their parallel calls start on a worker,
/// and with one thread run in place. Measured with `cargo xtask bench` on one thread: a
/// training step at batch 512 from 4.2–4.6 to 3.7 ms, the model's time per NFE when sampling
/// 10,000 rows from 21 to 18 ms.
///
/// Which worker: with several threads, one of the global pool's (`f` then spreads over all of
/// them). With one (`RAYON_NUM_THREADS=1`), one of this thread's own, built on first use, so
/// that callers on several threads (tests, a user's own threads) run side by side as they
/// did, instead of queueing on the global pool's single worker.
///
/// The caller's tracing span goes along. A worker that waits for a parallel call may run other
/// callers' jobs meanwhile, as it always could: `f` must not wait for a lock its caller holds.
/// The results are those of `f` on any thread: no kernel's bytes depend on the thread it runs
/// on (tested per kernel across thread counts).
pub fn on_workers<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    if rayon::current_thread_index().is_some() {
        return f();
    }
    let span = tracing::Span::current();
    let f = move || span.in_scope(f);
    if rayon::current_num_threads() > 1 {
        return rayon::scope(|_| f());
    }
    thread_local! {
        static OWN: Option<rayon::ThreadPool> = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .thread_name(|_| "sdeflow-worker".into())
            .stack_size(WORKER_STACK)
            .build()
            .ok();
    }
    OWN.with(|pool| match pool {
        Some(pool) => pool.install(f),
        None => f(), // no thread to be had: run here, as without a pool
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_on_a_worker_and_returns_its_result() {
        let (index, value) = on_workers(|| (rayon::current_thread_index(), 6 * 7));
        assert!(index.is_some(), "f ran outside any pool");
        assert_eq!(value, 42);
        // Already on a worker: runs in place.
        let inner = on_workers(|| {
            let here = std::thread::current().id();
            on_workers(move || std::thread::current().id() == here)
        });
        assert!(inner);
    }
}
