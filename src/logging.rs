//! Structured logs with `tracing`: JSON in the container, text for people.
//!
//! Whatever `KLIO_API_LOG` asks for, the libraries that can dump HTTP traffic are held at
//! `debug`: at `trace`, ureq's protocol layer logs every byte it sends and receives (the
//! kube-apiserver bearer token in the request head, users' tokens in TokenReview bodies). At
//! `debug` and above they log redacted headers at most; h2 and hyper never log header values,
//! and are capped the same way for good measure.

use tracing_subscriber::filter::{Directive, EnvFilter};

use crate::config::LogFormat;

/// Crates that log wire bytes at `trace`; they are held to `debug`.
const WIRE_CRATES: &[&str] = &["ureq_proto", "ureq", "h2", "hyper", "hyper_util"];

/// The filter for `KLIO_API_LOG` (default `info`), with the wire-dumping crates capped: the
/// directives naming them (or their modules) are dropped and `<crate>=debug` put in their place,
/// so no directive, general or specific, lets their `trace` events through.
pub fn filter(spec: Option<&str>) -> EnvFilter {
    let names_a_wire_crate = |directive: &str| {
        let target = directive.split(['=', '[']).next().unwrap_or_default().trim();
        WIRE_CRATES.iter().any(|c| target == *c || target.strip_prefix(c).is_some_and(|rest| rest.starts_with("::")))
    };
    let kept: Vec<&str> = spec.unwrap_or("info").split(',').filter(|d| !names_a_wire_crate(d)).collect();
    let mut filter = EnvFilter::try_new(kept.join(",")).unwrap_or_else(|_| EnvFilter::new("info"));
    for krate in WIRE_CRATES {
        let directive: Directive = format!("{krate}=debug").parse().expect("a valid directive");
        filter = filter.add_directive(directive);
    }
    filter
}

pub fn init(format: LogFormat) {
    let spec = std::env::var("KLIO_API_LOG").ok();
    let builder = tracing_subscriber::fmt().with_env_filter(filter(spec.as_deref())).with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(false).init(),
        LogFormat::Text => builder.compact().init(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_dumps_stay_off_whatever_the_filter_asks() {
        for spec in ["trace", "ureq_proto=trace,trace", "info,ureq_proto::util=trace", "ureq_proto", "hyper[x]=trace"] {
            let text = filter(Some(spec)).to_string();
            assert!(text.contains("ureq_proto=debug"), "{spec}: {text}");
            for krate in WIRE_CRATES {
                assert!(!text.contains(&format!("{krate}=trace")), "{spec}: {text}");
                assert!(!text.contains(&format!("{krate}::")), "{spec}: {text}");
            }
        }
        assert!(filter(Some("klio_api=trace")).to_string().contains("klio_api=trace"), "the rest is kept");
        assert!(filter(Some("ureq_protocol_x=trace")).to_string().contains("ureq_protocol_x=trace"));
    }
}
