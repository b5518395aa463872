//! What the site shows from the server's code: its command line (clap), its metrics registry,
//! its mapping of Klio records to KlioBackups (run on the demo catalog), the wording of a denial.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::sync::Arc;

use anyhow::{anyhow, bail, Result};
use clap::CommandFactory;
use klio_api::catalog::snapshot::{self, SourceRecords};
use klio_api::upstream::record::BackupRecord;
use serde_json::Value;

use crate::markdown::{esc, inline};
use crate::openapi::{code, table};

// ---------------------------------------------------------------------------------------------
// The command line.

/// The command line as clap defines it, built (globals propagated), with the values of
/// environment variables hidden so that the help text does not depend on the environment.
fn cli() -> clap::Command {
    fn hide_env(cmd: clap::Command) -> clap::Command {
        let names: Vec<String> = cmd.get_subcommands().map(|s| s.get_name().to_string()).collect();
        let mut cmd = cmd.mut_args(|a| a.hide_env_values(true));
        for name in names {
            cmd = cmd.mut_subcommand(name, hide_env);
        }
        cmd
    }
    let mut cmd = hide_env(klio_api::config::Cli::command());
    cmd.build();
    cmd
}

/// The server's version, as `klio-api --version` prints it.
pub fn version() -> String {
    cli().get_version().unwrap_or_default().to_string()
}

/// A command by its path of subcommand names (`"server api-server"`; `""` is the root).
pub fn command(path: &str) -> Result<clap::Command> {
    let mut cmd = cli();
    for name in path.split_whitespace() {
        cmd = cmd.find_subcommand(name).cloned().ok_or_else(|| anyhow!("klio-api has no subcommand {path:?}"))?;
    }
    Ok(cmd)
}

/// The default value of an argument (by its id, e.g. `hostname`).
pub fn default_of(cmd: &clap::Command, id: &str) -> Result<String> {
    let arg = cmd.get_arguments().find(|a| a.get_id() == id).ok_or_else(|| anyhow!("no argument {id}"))?;
    Ok(arg.get_default_values().iter().map(|v| v.to_string_lossy().to_string()).collect::<Vec<_>>().join(","))
}

/// A command's one-line description.
pub fn about(cmd: &clap::Command) -> String {
    cmd.get_about().map(|a| a.to_string()).unwrap_or_default()
}

/// A command's full help text.
pub fn help_text(cmd: &clap::Command) -> String {
    cmd.clone().render_long_help().to_string()
}

/// A flag of a command.
pub struct Flag {
    /// `--name`.
    pub flag: String,
    /// The environment variable it also reads.
    pub env: Option<String>,
    /// Its default value(s), comma-separated.
    pub default: String,
    /// Its help (Markdown inline markup), with its possible values.
    pub help: String,
}

/// The flags of `cmd`; global ones only when `globals` (they are listed once, with the root).
pub fn flags(cmd: &clap::Command, globals: bool) -> Vec<Flag> {
    cmd.get_arguments()
        .filter(|a| !a.is_hide_set() && a.get_long().is_some_and(|l| l != "help" && l != "version"))
        .filter(|a| globals || !a.is_global_set())
        .map(|a| {
            let long = a.get_long().unwrap_or_default();
            let takes_value = matches!(a.get_action(), clap::ArgAction::Set | clap::ArgAction::Append);
            let mut help = a.get_long_help().or(a.get_help()).map(|h| h.to_string()).unwrap_or_default();
            let possible: Vec<String> = a.get_possible_values().iter().map(|p| p.get_name().to_string()).collect();
            if takes_value && !possible.is_empty() {
                let _ = write!(help, ". One of: {}", possible.join(", "));
            }
            Flag {
                flag: format!("--{long}"),
                env: a.get_env().map(|e| e.to_string_lossy().to_string()),
                default: a
                    .get_default_values()
                    .iter()
                    .map(|v| v.to_string_lossy().to_string())
                    .collect::<Vec<_>>()
                    .join(","),
                help: help.replace('\n', " "),
            }
        })
        .collect()
}

/// The anchor of a flag on the configuration page: `<prefix>-<flag>`.
pub fn flag_id(prefix: &str, flag: &str) -> String {
    let mut out = format!("{prefix}-");
    for c in flag.trim_start_matches('-').chars() {
        if c.is_ascii_alphanumeric() || matches!(c, '.' | '_') {
            out.push(c);
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    out.trim_end_matches('-').to_string()
}

/// The flags of a command as a table, each flag its own anchor.
pub fn flags_table(cmd: &clap::Command, prefix: &str, globals: bool) -> String {
    let rows: Vec<Vec<String>> = flags(cmd, globals)
        .iter()
        .map(|f| {
            let mut first = format!("<span id=\"{}\">{}</span>", esc(&flag_id(prefix, &f.flag)), code(&f.flag));
            if let Some(env) = &f.env {
                let _ = write!(first, "<br><span class=\"meta\">env {}</span>", code(env));
            }
            if !f.default.is_empty() {
                let _ = write!(first, "<br><span class=\"meta\">default {}</span>", code(&f.default));
            }
            vec![first, inline(&f.help)]
        })
        .collect();
    table("flags", &["Flag", "Meaning"], &rows)
}

// ---------------------------------------------------------------------------------------------
// Metrics.

/// The metrics, from the registry itself: one sample of every labelled family (with empty label
/// values) is created so that the label names show in the exposition.
pub fn metrics_table() -> Result<String> {
    use klio_api::metrics::*;
    let m = metrics();
    let s = String::new;
    let _ = m.requests.get_or_create(&RequestLabels { verb: "", group: "", resource: "", code: 0 });
    let _ = m.request_duration.get_or_create(&DurationLabels { verb: "", group: "", resource: "" });
    let _ = m.inflight.get_or_create(&InflightLabels { request_kind: "" });
    let _ = m.fetches.get_or_create(&FetchLabels { server: s(), tier: s(), result: s() });
    let _ = m.fetch_duration.get_or_create(&SourceLabels { server: s(), tier: s() });
    let _ = m.last_success.get_or_create(&SourceLabels { server: s(), tier: s() });
    let _ = m.kopia_requests.get_or_create(&KopiaRequestLabels { server: s(), tier: s(), request: "" });
    let _ = m.kopia_sessions.get_or_create(&SourceLabels { server: s(), tier: s() });
    let _ = m.read_errors.get_or_create(&ReadErrorLabels { server: s(), tier: s(), reason: "" });
    let text = m.render();
    let mut help: BTreeMap<String, String> = BTreeMap::new();
    let mut kind: Vec<(String, String)> = vec![];
    let mut labels_of: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, h) = rest.split_once(' ').unwrap_or((rest, ""));
            help.insert(name.to_string(), h.to_string());
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, t) = rest.split_once(' ').unwrap_or((rest, ""));
            kind.push((name.to_string(), t.to_string()));
        } else if let Some((sample, rest)) = line.split_once('{').filter(|_| !line.starts_with('#')) {
            let family = kind.iter().map(|(n, _)| n).filter(|n| sample.starts_with(n.as_str())).max_by_key(|n| n.len());
            if let Some(family) = family {
                let labels = rest.split('}').next().unwrap_or_default();
                for (k, _) in labels.split(',').filter_map(|pair| pair.split_once('=')) {
                    if k != "le" {
                        labels_of.entry(family.clone()).or_default().insert(k.to_string());
                    }
                }
            }
        }
    }
    if kind.is_empty() {
        bail!("the metrics registry rendered no metric");
    }
    let rows: Vec<Vec<String>> = kind
        .iter()
        .map(|(name, t)| {
            let shown = if t == "counter" { format!("{name}_total") } else { name.clone() };
            let labels = labels_of
                .get(name)
                .map(|l| l.iter().map(|k| code(k)).collect::<Vec<_>>().join(", "))
                .unwrap_or_default();
            let meaning = help.get(name).map(String::as_str).unwrap_or_default().trim_end_matches('.');
            vec![code(&shown), esc(t), labels, esc(meaning)]
        })
        .collect();
    Ok(table("metrics", &["Metric", "Type", "Labels", "Meaning"], &rows))
}

// ---------------------------------------------------------------------------------------------
// Examples: the demo catalog through the real mapping.

/// The demo catalog, as the service reads and serves it.
pub struct Examples {
    /// The demo catalog's records, tier 1 then tier 2.
    tiers: [Vec<BackupRecord>; 2],
    /// Every KlioBackup, as the service serves them (without resourceVersion, which depends on
    /// when the catalog was read), with the catalog's record of it.
    objects: Vec<(Value, Arc<snapshot::Backup>)>,
    /// The Klio server name the service uses by default.
    pub server: String,
}

impl Examples {
    /// Reads the demo catalog over the Kopia protocol, as the service reads a Klio server.
    pub fn build() -> Result<Self> {
        let server = default_of(&command("server api-server")?, "hostname")?;
        let shared = klio_api::demo::read_sample_catalog()?;
        let tiers = shared.clone().map(|backups| backups.iter().map(|b| BackupRecord::clone(&b.record)).collect());
        let server_name: Arc<str> = server.as_str().into();
        let sources: Vec<SourceRecords> = shared
            .iter()
            .enumerate()
            .map(|(tier, backups)| SourceRecords { server: &server_name, tier, backups })
            .collect();
        let snap = snapshot::build(None, snapshot::ResourceVersion(vec![0; 2]), &sources, false);
        let mut objects = vec![];
        for b in &snap.backups {
            let mut v = serde_json::to_value(&**b)?;
            if let Some(meta) = v["metadata"].as_object_mut() {
                meta.remove("resourceVersion");
            }
            objects.push((v, b.clone()));
        }
        Ok(Self { tiers, objects, server })
    }

    /// A KlioBackup by name.
    pub fn object(&self, name: &str) -> Result<&Value> {
        self.objects
            .iter()
            .map(|(o, _)| o)
            .find(|o| o["metadata"]["name"].as_str() == Some(name))
            .ok_or_else(|| anyhow!("the demo catalog has no backup {name}"))
    }

    /// The KlioBackups a field selector selects, in the order the service lists them.
    pub fn selected(&self, field_selector: &str) -> Result<Vec<&Value>> {
        let selector = klio_api::api::selectors::FieldSelector::parse(field_selector).map_err(|e| anyhow!(e))?;
        Ok(self.objects.iter().filter(|(_, b)| selector.matches(b)).map(|(o, _)| o).collect())
    }

    /// A Klio record by cluster and backup ID.
    pub fn record(&self, cluster: &str, id: &str) -> Result<&BackupRecord> {
        self.tiers
            .iter()
            .flatten()
            .find(|r| &*r.cluster_name == cluster && &*r.name == id)
            .ok_or_else(|| anyhow!("the demo catalog has no record {cluster}/{id}"))
    }
}

/// The message of a 403, as the service words it.
pub fn forbidden_message(user: &str, method: &str, path: &str) -> String {
    klio_api::auth::authz::Attributes::of(method, path, None).forbidden_message(user, "")
}
