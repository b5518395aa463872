//! Structured logs with `tracing`: JSON in the container, text for people.
//!
//! Whatever `KLIO_API_LOG` asks for, the libraries that can dump HTTP traffic log at `debug` at
//! most: at `trace`, ureq's protocol layer logs every byte it sends and receives (the
//! kube-apiserver bearer token in the request head, users' tokens in TokenReview bodies). At
//! `debug` and above they log redacted headers at most; h2 and hyper never log header values,
//! and are capped the same way for good measure.

use tracing_subscriber::filter::{EnvFilter, FilterExt, LevelFilter, Targets};
use tracing_subscriber::prelude::*;

use crate::config::LogFormat;

/// Crates that log wire bytes at `trace`.
const WIRE_CRATES: &[&str] = &["ureq_proto", "ureq", "h2", "hyper", "hyper_util"];

/// What `KLIO_API_LOG` asks for (default `info`).
pub fn requested(spec: Option<&str>) -> EnvFilter {
    spec.and_then(|s| EnvFilter::try_new(s).ok()).unwrap_or_else(|| EnvFilter::new("info"))
}

/// A ceiling applied on top of [`requested`]: `debug` for the wire-dumping crates (and their
/// modules), no limit for the rest. An event is logged when both let it through.
pub fn ceiling() -> Targets {
    Targets::new()
        .with_default(LevelFilter::TRACE)
        .with_targets(WIRE_CRATES.iter().map(|krate| (*krate, LevelFilter::DEBUG)))
}

/// Installs the process's subscriber, writing to stderr (stdout stays free for command output),
/// filtered by `KLIO_API_LOG` under the wire-dump [`ceiling`]. Call once, first thing.
pub fn init(format: LogFormat) {
    let spec = std::env::var("KLIO_API_LOG").ok();
    let filter = requested(spec.as_deref()).and(ceiling());
    let registry = tracing_subscriber::registry();
    match format {
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(false)
                    .with_writer(std::io::stderr)
                    .with_filter(filter),
            )
            .init(),
        LogFormat::Text => registry
            .with(tracing_subscriber::fmt::layer().compact().with_writer(std::io::stderr).with_filter(filter))
            .init(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing::Level;

    #[test]
    fn wire_dumps_stay_off_whatever_the_filter_asks() {
        let c = ceiling();
        for target in ["ureq_proto", "ureq_proto::util", "ureq::run", "h2::codec", "hyper::proto", "hyper_util::server"]
        {
            assert!(!c.would_enable(target, &Level::TRACE), "{target}");
            assert!(c.would_enable(target, &Level::DEBUG), "{target}");
        }
        assert!(c.would_enable("klio_api::server", &Level::TRACE), "the rest is not limited");
        assert!(c.would_enable("tokio", &Level::TRACE));
    }
}
