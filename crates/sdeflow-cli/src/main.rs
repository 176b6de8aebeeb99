//! The `sdeflow` binary: see the crate documentation of `sdeflow_cli`.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    // candle's elementwise ops on 64K elements or more run on its own thread pool, whose
    // workers spin 25,000 pauses (about a millisecond here) after each op before they park:
    // on the cores sdeflow's kernels (rayon) need next. A training step runs several such
    // ops (autograd's gradient sums), and at two threads the spinning cost a step at batch
    // 512 about 12% (`bench --train`). A short spin keeps back-to-back ops fast; a value the
    // user set is kept.
    if std::env::var_os("CANDLE_BARRIER_POOL_SPIN_LIMIT").is_none() {
        // SAFETY: first thing in `main`, before any other thread exists (tracing, rayon and
        // candle start theirs later), so nothing reads the environment concurrently.
        #[allow(unsafe_code)]
        unsafe {
            std::env::set_var("CANDLE_BARRIER_POOL_SPIN_LIMIT", "1000");
        }
    }
    // Implicit and sliced score matching differentiate a gradient (∇ₓ·ŝ) again; candle
    // detaches every gradient unless this is set before a thread's first backward pass. Kept
    // on (the values of first-order gradients are the same either way), a value the user set
    // is kept.
    if std::env::var_os("CANDLE_GRAD_DO_NOT_DETACH").is_none() {
        // SAFETY: as above, before any other thread exists.
        #[allow(unsafe_code)]
        unsafe {
            std::env::set_var("CANDLE_GRAD_DO_NOT_DETACH", "1");
        }
    }
    // Commands run on rayon's workers (`main_with`), with the main thread's stack.
    sdeflow_kernel::threads::build_global_pool();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let code = sdeflow_cli::main_with(
        std::env::args(),
        &mut std::io::stdout(),
        &mut std::io::stderr(),
    );
    std::process::exit(code);
}
