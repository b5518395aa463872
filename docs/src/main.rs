//! `klio-docs --out docs/site`: writes the documentation site (see the library's documentation).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// Writes the documentation site of the Klio API service.
#[derive(Debug, Parser)]
#[command(name = "klio-docs", version)]
struct Args {
    /// Directory to write the site into (created if missing). Pages an earlier run wrote that are
    /// no longer generated are removed.
    #[arg(long)]
    out: PathBuf,
    /// The repository whose openapi/, conformance/, deploy/ and docs/ the site is made from
    /// (default: the source tree this tool was built from).
    #[arg(long)]
    root: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let mut inputs = klio_docs::Inputs::from_source_tree();
    if let Some(root) = args.root {
        inputs.root = root;
    }
    let result = klio_docs::generate(&inputs).and_then(|site| {
        let (written, removed) = klio_docs::write_site(&args.out, &site)?;
        println!(
            "wrote the documentation site to {} ({} files, {written} changed, {removed} stale removed); open {}",
            args.out.display(),
            site.len(),
            args.out.join("index.html").display()
        );
        Ok(())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
