//! Process-wide settings a program built on the core applies as it starts.
//!
//! glibc's `malloc` gives each thread that finds an arena locked a new arena of its own, up to
//! eight per core, and keeps what every arena once held. The bridge's threads (the async
//! runtime's workers, the store's I/O threads, blocking tasks) each allocate in bursts: with
//! the default, memory freed after a burst stays spread over many arenas. Measured with the
//! `mimi` benchmark's RSS phase (1,000 hosted MLS clients joining): 27–31 kB of RSS per client
//! with the default, 21–23 kB with two arenas, for a few per cent of the core's durable rate
//! (docs/benchmarks.md). The setting can only be
//! made before the first allocation, that is in the environment the process starts with, so
//! [`exec_with_malloc_arena_limit`] starts the program again with `MALLOC_ARENA_MAX` set.
//!
//! [`runtime`] builds the async runtime for a number of worker threads the way `bridge run`
//! reads `bridge.worker_threads`.

/// The number of glibc `malloc` arenas the bridge runs with unless told otherwise.
pub const MALLOC_ARENA_MAX: &str = "2";

/// The environment variable glibc reads.
const ARENA_VAR: &str = "MALLOC_ARENA_MAX";

/// When this process runs on glibc with no `MALLOC_ARENA_MAX` in its environment, replaces it
/// with the same program, arguments and process ID, with `MALLOC_ARENA_MAX=`
/// [`MALLOC_ARENA_MAX`] added; it does not return then. Returns without doing anything when
/// the variable is set (an admin's own value, or the program already restarted) or on other
/// platforms, and returns the error when the program could not be started again (the caller
/// goes on with the default allocator settings). Call it first thing in `main`, before any
/// thread is started.
pub fn exec_with_malloc_arena_limit() -> std::io::Result<()> {
    if !cfg!(all(target_os = "linux", target_env = "gnu")) || std::env::var_os(ARENA_VAR).is_some()
    {
        return Ok(());
    }
    exec_with(ARENA_VAR, MALLOC_ARENA_MAX)
}

#[cfg(unix)]
fn exec_with(var: &str, value: &str) -> std::io::Result<()> {
    use std::os::unix::process::CommandExt as _;
    let mut args = std::env::args_os();
    let mut command = std::process::Command::new(std::env::current_exe()?);
    if let Some(arg0) = args.next() {
        command.arg0(arg0);
    }
    // `exec` returns only on failure.
    Err(command.args(args).env(var, value).exec())
}

#[cfg(not(unix))]
fn exec_with(_var: &str, _value: &str) -> std::io::Result<()> {
    Ok(())
}

/// The async runtime (I/O and timers on) for `worker_threads` as `bridge.worker_threads` means
/// it: 1 runs every task on the calling thread (a current-thread runtime), 0 starts a worker per
/// core, any other number that many workers.
pub fn runtime(worker_threads: usize) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = match worker_threads {
        1 => tokio::runtime::Builder::new_current_thread(),
        0 => tokio::runtime::Builder::new_multi_thread(),
        n => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder.worker_threads(n);
            builder
        }
    };
    builder.enable_all().build()
}

#[cfg(test)]
mod tests {
    use tokio::runtime::RuntimeFlavor;

    #[test]
    fn worker_threads_choose_the_runtime() {
        let one = super::runtime(1).expect("runtime");
        assert_eq!(one.handle().runtime_flavor(), RuntimeFlavor::CurrentThread);
        let three = super::runtime(3).expect("runtime");
        assert_eq!(three.handle().runtime_flavor(), RuntimeFlavor::MultiThread);
        assert_eq!(three.metrics().num_workers(), 3);
        let per_core = super::runtime(0).expect("runtime");
        assert_eq!(
            per_core.handle().runtime_flavor(),
            RuntimeFlavor::MultiThread
        );
        assert!(per_core.metrics().num_workers() >= 1);
    }
}
