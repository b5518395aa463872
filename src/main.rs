use std::process::ExitCode;

use clap::Parser;
use klio_api::config::{CatalogCommand, Cli, Command, ServerCommand};

fn main() -> ExitCode {
    limit_malloc_arenas();
    let cli = Cli::parse();
    let log_format = match &cli.command {
        // The demo is for people at a terminal.
        Command::Demo(_) if std::env::var_os("KLIO_API_LOG_FORMAT").is_none() => klio_api::config::LogFormat::Text,
        _ => cli.log_format,
    };
    klio_api::logging::init(log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
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

/// glibc gives every thread that allocates an arena of its own; with the async workers and the
/// blocking pool that multiplies the memory kept around after a catalog refresh. Two arenas are
/// plenty for a server that spends its time writing shared buffers.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only tunes the allocator; called first thing, before other threads exist.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}
