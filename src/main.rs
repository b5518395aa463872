use std::process::ExitCode;

use clap::Parser;
use klio_api::config::{CatalogCommand, Cli, Command, ServerCommand};

/// mimalloc for Rust's allocations: every thread allocates from a heap of its own without a lock
/// (the request path allocates a few dozen small objects; with glibc's allocator that was a fifth
/// of a small request's CPU), and freed pages go back to the system by themselves. OpenSSL keeps
/// glibc's allocator: its record buffers, taken and given back around every write, are reused hot
/// there (routed to mimalloc, large lists were written 20 % slower).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's options, set before the first allocation (Rust's runtime allocates before `main`,
/// so from the constructors that run before it): memory is committed as it is used, not a whole
/// arena ahead, and pages freed are given back to the system at once instead of a little later,
/// also by threads that exit (an idle server's resident size is what it keeps, not the peak of
/// its last catalog read).
#[used]
#[link_section = ".init_array"]
static MIMALLOC_OPTIONS: extern "C" fn() = {
    // Their numbers in mimalloc 2's `mi_option_e` (the crate names only some).
    const ARENA_EAGER_COMMIT: libmimalloc_sys::mi_option_t = 4;
    const ABANDONED_PAGE_PURGE: libmimalloc_sys::mi_option_t = 12;
    const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
    extern "C" fn set() {
        // SAFETY: setting an option only stores it; mimalloc reads it when it needs it.
        unsafe {
            libmimalloc_sys::mi_option_set(ARENA_EAGER_COMMIT, 0);
            libmimalloc_sys::mi_option_set(ABANDONED_PAGE_PURGE, 1);
            libmimalloc_sys::mi_option_set(PURGE_DELAY, 0);
        }
    }
    set
};

fn main() -> ExitCode {
    limit_malloc_arenas();
    let cli = Cli::parse();
    let log_format = match &cli.command {
        // The demo is for people at a terminal.
        Command::Demo(_) if std::env::var_os("KLIO_API_LOG_FORMAT").is_none() => klio_api::config::LogFormat::Text,
        _ => cli.log_format,
    };
    klio_api::logging::init(log_format);
    // Accepting connections, signals, timers of the process: one thread. Connections are served
    // by threads of their own (`klio_api::server`), the catalog is read by another.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .on_thread_park(klio_api::memory::collect_when_idle)
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("error: starting the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        let shutdown = klio_api::apiserver::shutdown_signal();
        match cli.command {
            Command::Server { which: ServerCommand::ApiServer(args) } => {
                klio_api::apiserver::ApiServer::bind(&args).await?.serve(shutdown).await
            }
            Command::Catalog { which: CatalogCommand::Serve(args) } => {
                klio_api::upstream::kopia::server::run(args, shutdown).await
            }
            Command::Demo(args) => klio_api::demo::run(args, shutdown).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = format!("{err:#}"), "exiting");
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// glibc now serves the C libraries only (OpenSSL): two arenas, one per worker, so that OpenSSL's
/// buffers taken and given back around every write do not wait on each other's lock, and no more
/// (every thread that allocates would otherwise get an arena of its own, kept after a burst).
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only tunes the allocator; called first thing, before other threads exist.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}
