//! `klio-docs`: the documentation site of the Klio API service (plain HTML and one CSS file, no
//! script, nothing loaded from elsewhere), generated from what the service really is:
//!
//! * prose in Markdown, `docs/pages/*.md` (one file per page), rendered by pulldown-cmark after
//!   minijinja has filled in the facts below, and laid out by `docs/theme/page.html`;
//! * the OpenAPI document (every field of every type, the endpoints, the responses);
//! * the server's code, as a library: the mapping of Klio records to KlioBackups (run on the demo
//!   catalog for the examples), labels and annotations, Table columns, field selectors, the
//!   command line (clap), the metrics, the wording of a denial;
//! * the repository: the kubectl conformance cases and their golden outputs
//!   (`conformance/kubectl-cases.tsv`, `conformance/expected/`) and the manifests under `deploy/`.
//!
//! The output is deterministic (no timestamps, no absolute paths, no environment), so the
//! package's tests can regenerate it and fail when the committed `docs/site` is not current.
//! The tool depends on the server, never the reverse.

#![warn(missing_docs)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

pub mod markdown;
pub mod openapi;
pub mod service;
pub mod site;
pub mod sources;

pub use site::generate;

/// Marks the pages this tool wrote (stale ones are removed only from such a directory).
pub const GENERATOR: &str = "klio-docs";

/// The command that regenerates the committed site.
pub const REGENERATE: &str = "cargo run -p klio-docs -- --out docs/site";

/// Where the inputs are.
#[derive(Debug, Clone)]
pub struct Inputs {
    /// The repository: `openapi/`, `conformance/`, `deploy/` and `docs/` (pages and theme).
    pub root: PathBuf,
}

impl Inputs {
    /// The source tree this tool was built from.
    pub fn from_source_tree() -> Self {
        let docs = Path::new(env!("CARGO_MANIFEST_DIR"));
        Self { root: docs.parent().unwrap_or(docs).to_path_buf() }
    }
}

/// Writes `site` into `out`; files whose content is unchanged are not touched. Returns how many
/// files were written and how many stale pages were removed.
pub fn write_site(out: &Path, site: &BTreeMap<String, String>) -> Result<(usize, usize)> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let ours = std::fs::read_to_string(out.join("index.html"))
        .map(|t| t.contains(&format!("<meta name=\"generator\" content=\"{GENERATOR}\">")))
        .unwrap_or(false);
    let mut removed = 0;
    if ours {
        for entry in std::fs::read_dir(out)? {
            let path = entry?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
            if (name.ends_with(".html") || name.ends_with(".css")) && !site.contains_key(&name) {
                std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
                removed += 1;
            }
        }
    }
    let mut written = 0;
    for (name, content) in site {
        let path = out.join(name);
        if std::fs::read(&path).ok().as_deref() != Some(content.as_bytes()) {
            std::fs::write(&path, content).with_context(|| format!("writing {}", path.display()))?;
            written += 1;
        }
    }
    Ok((written, removed))
}
