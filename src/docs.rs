//! `klio-api docs --out DIR`: the static documentation site (plain HTML and one CSS file, no
//! script, nothing loaded from elsewhere), generated from what the service really is:
//!
//! * the OpenAPI document (every field of every type, the endpoints, the responses);
//! * the code: the mapping of Klio records to KlioBackups (run on the demo catalog for the
//!   examples), the labels and annotations it sets, the Table columns, the field selectors, the
//!   command line (clap), the metrics, the wording of a denial;
//! * the repository: the kubectl commands and their golden outputs of the conformance suite
//!   (`conformance/kubectl.sh`, `conformance/expected/`) and the manifests under `deploy/`.
//!
//! The output is deterministic (no timestamps, no absolute paths, no environment), so
//! `tests/docs.rs` can regenerate it and fail when `docs/site` is not current.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, CommandFactory};
use serde_json::{json, Map, Value};

use crate::api::object::{labels, TIER_ANNOTATIONS};
use crate::catalog::snapshot::{self, SourceRecords};
use crate::upstream::record::BackupRecord;

/// The API's single source of truth, as built into the binary.
pub static OPENAPI_DOCUMENT: &str = include_str!("../openapi/kliocatalog.enterprisedb.io_v1alpha1.json");
const OPENAPI_PATH: &str = "openapi/kliocatalog.enterprisedb.io_v1alpha1.json";

/// Marks the pages this command wrote (stale ones are removed only from such a directory).
const GENERATOR: &str = "klio-api docs";

/// `klio-api docs`.
#[derive(Debug, Clone, Args)]
pub struct DocsArgs {
    /// Directory to write the site into (created if missing). Pages an earlier run wrote that
    /// are no longer generated are removed.
    #[arg(long)]
    pub out: PathBuf,
    /// The kubectl conformance suite whose commands and recorded outputs the kubectl page shows
    /// (default: conformance/ of the source tree the binary was built from).
    #[arg(long)]
    pub conformance_dir: Option<PathBuf>,
    /// The manifests the installation guide describes (default: deploy/ of the source tree the
    /// binary was built from).
    #[arg(long)]
    pub deploy_dir: Option<PathBuf>,
}

/// Where the repository inputs are.
#[derive(Debug, Clone)]
pub struct Inputs {
    pub conformance_dir: PathBuf,
    pub deploy_dir: PathBuf,
}

impl Inputs {
    /// The source tree this crate was built from.
    pub fn from_source_tree() -> Self {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        Self { conformance_dir: root.join("conformance"), deploy_dir: root.join("deploy") }
    }
}

/// The command.
pub fn run(args: &DocsArgs) -> Result<()> {
    let defaults = Inputs::from_source_tree();
    let inputs = Inputs {
        conformance_dir: args.conformance_dir.clone().unwrap_or(defaults.conformance_dir),
        deploy_dir: args.deploy_dir.clone().unwrap_or(defaults.deploy_dir),
    };
    let site = generate(&inputs)?;
    let (written, removed) = write_site(&args.out, &site)?;
    println!(
        "wrote the documentation site to {} ({} files, {written} changed, {removed} stale removed); open {}",
        args.out.display(),
        site.len(),
        args.out.join("index.html").display()
    );
    Ok(())
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

/// The site: file name → content.
pub fn generate(inputs: &Inputs) -> Result<BTreeMap<String, String>> {
    let doc: Value = serde_json::from_str(OPENAPI_DOCUMENT).context("parsing the embedded OpenAPI document")?;
    let api = Api::new(&doc)?;
    let examples = Examples::build()?;
    let kubectl = KubectlSuite::load(&inputs.conformance_dir)?;
    let deploy = Deploy::load(&inputs.deploy_dir)?;
    let pages = vec![
        index_page(&api, &kubectl),
        install_page(&api, &deploy)?,
        configuration_page()?,
        reference_page(&api, &examples)?,
        examples_page(&api, &examples)?,
        kubectl_page(&kubectl),
        troubleshooting_page(&api, &deploy)?,
        operations_page(&deploy)?,
    ];
    let mut site = BTreeMap::new();
    for page in &pages {
        site.insert(page.file.to_string(), page.render());
    }
    site.insert("style.css".to_string(), STYLE.to_string());
    Ok(site)
}

// ---------------------------------------------------------------------------------------------
// HTML helpers.

/// Escapes text for HTML content and attribute values.
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Inline markup of the prose: `code`, **strong**, [text](href). Everything else is escaped.
fn inline(text: &str) -> String {
    let mut out = String::new();
    for (i, part) in text.split('`').enumerate() {
        if i % 2 == 1 {
            let _ = write!(out, "<code>{}</code>", esc(part));
            continue;
        }
        let mut rest = esc(part);
        // Links: [text](href).
        let mut linked = String::new();
        while let Some(open) = rest.find('[') {
            let Some(close) = rest[open..].find("](").map(|c| open + c) else { break };
            let Some(end) = rest[close..].find(')').map(|e| close + e) else { break };
            linked.push_str(&rest[..open]);
            let _ = write!(linked, "<a href=\"{}\">{}</a>", &rest[close + 2..end], &rest[open + 1..close]);
            rest = rest[end + 1..].to_string();
        }
        linked.push_str(&rest);
        // Strong: **text**.
        let mut strong = String::new();
        for (j, piece) in linked.split("**").enumerate() {
            if j % 2 == 1 {
                let _ = write!(strong, "<strong>{piece}</strong>");
            } else {
                strong.push_str(piece);
            }
        }
        out.push_str(&strong);
    }
    out
}

/// Block markup of the prose: paragraphs separated by blank lines; `- ` lists (continuation
/// lines indented); `1. ` numbered lists; blocks indented by four spaces are code; `! ` notes.
fn md(text: &str) -> String {
    let mut out = String::new();
    for block in text.split("\n\n") {
        let block = block.trim_matches('\n');
        if block.trim().is_empty() {
            continue;
        }
        let lines: Vec<&str> = block.lines().collect();
        let ordered = lines[0].starts_with("1. ");
        if lines[0].starts_with("- ") || ordered {
            let mut items: Vec<String> = vec![];
            for line in &lines {
                let marker = line.split_once(". ").filter(|(n, _)| ordered && n.parse::<u32>().is_ok());
                if let Some(item) = line.strip_prefix("- ").or(marker.map(|(_, t)| t)) {
                    items.push(item.to_string());
                } else if let Some(last) = items.last_mut() {
                    last.push(' ');
                    last.push_str(line.trim());
                }
            }
            let tag = if ordered { "ol" } else { "ul" };
            let _ = writeln!(out, "<{tag}>");
            for item in items {
                let _ = writeln!(out, "<li>{}</li>", inline(&item));
            }
            let _ = writeln!(out, "</{tag}>");
        } else if lines.iter().all(|l| l.starts_with("    ")) {
            let code: Vec<&str> = lines.iter().map(|l| &l[4..]).collect();
            out.push_str(&pre(&code.join("\n"), None));
        } else if let Some(first) = lines[0].strip_prefix("! ") {
            let text = std::iter::once(first).chain(lines[1..].iter().map(|l| l.trim())).collect::<Vec<_>>().join(" ");
            let _ = writeln!(out, "<div class=\"note\"><p>{}</p></div>", inline(&text));
        } else {
            let text = lines.iter().map(|l| l.trim()).collect::<Vec<_>>().join(" ");
            let _ = writeln!(out, "<p>{}</p>", inline(&text));
        }
    }
    out
}

/// A code block; `label` names what it is (a file, a command).
fn pre(code: &str, label: Option<&str>) -> String {
    let label = label.map(|l| format!("<div class=\"label\">{}</div>", esc(l))).unwrap_or_default();
    format!("<div class=\"code\">{label}<pre><code>{}</code></pre></div>\n", esc(code.trim_end_matches('\n')))
}

/// A table of plain cells (already HTML).
fn table(class: &str, head: &[&str], rows: &[Vec<String>]) -> String {
    let mut out = format!("<div class=\"table\"><table class=\"{class}\">\n<thead><tr>");
    for h in head {
        let _ = write!(out, "<th>{}</th>", esc(h));
    }
    out.push_str("</tr></thead>\n<tbody>\n");
    for row in rows {
        out.push_str("<tr>");
        for cell in row {
            let _ = write!(out, "<td>{cell}</td>");
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</tbody>\n</table></div>\n");
    out
}

fn code(text: &str) -> String {
    format!("<code>{}</code>", esc(text))
}

/// An anchor id from free text: letters, digits, `-`, `.`, `_`.
fn slug(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars() {
        if c.is_ascii_alphanumeric() || matches!(c, '.' | '_') {
            out.push(c);
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    out.trim_matches('-').to_string()
}

struct Section {
    id: String,
    title: String,
    html: String,
}

fn section(id: &str, title: &str, html: String) -> Section {
    Section { id: id.to_string(), title: title.to_string(), html }
}

struct Page {
    file: &'static str,
    title: &'static str,
    lead: String,
    sections: Vec<Section>,
}

/// The pages, in navigation order: file, navigation label.
const NAV: &[(&str, &str)] = &[
    ("index.html", "Overview"),
    ("install.html", "Installation"),
    ("configuration.html", "Configuration"),
    ("reference.html", "API reference"),
    ("examples.html", "Examples"),
    ("kubectl.html", "kubectl"),
    ("troubleshooting.html", "Troubleshooting"),
    ("operations.html", "Operations"),
];

impl Page {
    fn render(&self) -> String {
        let mut out = String::new();
        let _ = write!(
            out,
            "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
             <meta name=\"generator\" content=\"{GENERATOR}\">\n<title>{} · Klio API service</title>\n\
             <link rel=\"icon\" href=\"data:,\">\n<link rel=\"stylesheet\" href=\"style.css\">\n</head>\n<body>\n",
            esc(self.title)
        );
        out.push_str("<header class=\"site\">\n<a class=\"brand\" href=\"index.html\">Klio API service</a>\n<nav>\n");
        for (file, label) in NAV {
            let current = if *file == self.file { " aria-current=\"page\"" } else { "" };
            let _ = writeln!(out, "<a href=\"{file}\"{current}>{}</a>", esc(label));
        }
        out.push_str("</nav>\n</header>\n<div class=\"layout\">\n");
        if self.sections.len() > 1 {
            out.push_str("<aside class=\"toc\">\n<p>On this page</p>\n<ul>\n");
            for s in &self.sections {
                let _ = writeln!(out, "<li><a href=\"#{}\">{}</a></li>", esc(&s.id), esc(&s.title));
            }
            out.push_str("</ul>\n</aside>\n");
        }
        let _ = write!(out, "<main>\n<h1>{}</h1>\n{}", esc(self.title), self.lead);
        for s in &self.sections {
            let _ = write!(
                out,
                "<section id=\"{id}\">\n<h2><a class=\"anchor\" href=\"#{id}\">{}</a></h2>\n{}</section>\n",
                esc(&s.title),
                s.html,
                id = esc(&s.id)
            );
        }
        let _ = write!(
            out,
            "</main>\n</div>\n<footer>\n<p>klio-api {} · generated by <code>klio-api docs</code> from \
             <code>{OPENAPI_PATH}</code>, the code, <code>conformance/</code> and <code>deploy/</code>. \
             Do not edit: run <code>cargo run -- docs --out docs/site</code>.</p>\n</footer>\n</body>\n</html>\n",
            env!("CARGO_PKG_VERSION")
        );
        out
    }
}

// ---------------------------------------------------------------------------------------------
// The OpenAPI document.

struct Api<'a> {
    doc: &'a Value,
    schemas: &'a Map<String, Value>,
    group: String,
    version: String,
    resource: &'static crate::api::discovery::Resource,
}

/// A field of a type, flattened with its parents.
struct FieldRow {
    /// `status.tablespaces[].name`
    path: String,
    /// Where the path's last segment starts.
    leaf_at: usize,
    depth: usize,
    ty: String,
    required: &'static str,
    description: String,
}

impl<'a> Api<'a> {
    fn new(doc: &'a Value) -> Result<Self> {
        let schemas = doc["components"]["schemas"].as_object().ok_or_else(|| anyhow!("no components.schemas"))?;
        let discovery = &doc["x-klio-discovery"];
        let group = discovery["group"].as_str().ok_or_else(|| anyhow!("no x-klio-discovery.group"))?.to_string();
        let version = discovery["version"].as_str().ok_or_else(|| anyhow!("no x-klio-discovery.version"))?.to_string();
        let resource = crate::routes::RESOURCES.first().ok_or_else(|| anyhow!("the document defines no resource"))?;
        Ok(Self { doc, schemas, group, version, resource })
    }

    fn group_version(&self) -> String {
        format!("{}/{}", self.group, self.version)
    }

    /// `#/components/schemas/io.x.v1.Kind` → the schema key.
    fn ref_key(reference: &str) -> Option<&str> {
        reference.strip_prefix("#/components/schemas/")
    }

    /// The type's display name (its last segment), which is also its anchor on the reference page.
    fn short(key: &str) -> &str {
        key.rsplit('.').next().unwrap_or(key)
    }

    /// The schema a property refers to, directly or through `allOf`.
    fn target(prop: &Value) -> Option<&str> {
        prop["$ref"].as_str().or_else(|| prop["allOf"][0]["$ref"].as_str()).and_then(Self::ref_key)
    }

    fn is_kind(schema: &Value) -> bool {
        schema.get("x-kubernetes-group-version-kind").is_some()
    }

    /// The reference page's anchor for a type.
    fn type_link(key: &str) -> String {
        let short = Self::short(key);
        format!("<a href=\"reference.html#{}\">{}</a>", esc(short), esc(short))
    }

    /// The type of a property, as HTML, kubectl-explain style.
    fn type_html(&self, prop: &Value) -> String {
        if let Some(key) = Self::target(prop) {
            let schema = &self.schemas[key];
            return match schema["type"].as_str() {
                Some("object") | None => Self::type_link(key),
                Some(_) => format!(
                    "{} ({})",
                    Self::type_link(key),
                    esc(Self::scalar(schema).replacen(" (", ", ", 1).trim_end_matches(')'))
                ),
            };
        }
        match prop["type"].as_str() {
            Some("array") => format!("[]{}", self.type_html(&prop["items"])),
            Some("object") if prop.get("additionalProperties").is_some() => {
                format!("map[string]{}", self.type_html(&prop["additionalProperties"]))
            }
            _ => esc(&Self::scalar(prop)),
        }
    }

    /// `integer (int64, ≥ 0)`, `string (date-time)`, `string: one of A, B`.
    fn scalar(schema: &Value) -> String {
        let mut notes = vec![];
        if let Some(f) = schema["format"].as_str() {
            notes.push(f.to_string());
        }
        if let Some(min) = schema["minimum"].as_i64() {
            notes.push(format!("≥ {min}"));
        }
        let mut text = schema["type"].as_str().unwrap_or("object").to_string();
        if !notes.is_empty() {
            let _ = write!(text, " ({})", notes.join(", "));
        }
        if let Some(values) = schema["enum"].as_array() {
            let values: Vec<&str> = values.iter().filter_map(Value::as_str).collect();
            let _ = write!(text, ": one of {}", values.join(", "));
        }
        text
    }

    /// Every field of `key`, depth first; types with their own kind are not expanded (they have
    /// their own table).
    fn fields(&self, key: &str) -> Vec<FieldRow> {
        let mut rows = vec![];
        let mut visiting = vec![key.to_string()];
        self.walk(key, "", 0, &mut rows, &mut visiting);
        rows
    }

    fn walk(&self, key: &str, prefix: &str, depth: usize, rows: &mut Vec<FieldRow>, visiting: &mut Vec<String>) {
        let schema = &self.schemas[key];
        let required: Vec<&str> =
            schema["required"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
        let Some(props) = schema["properties"].as_object() else { return };
        for (name, prop) in props {
            let path = format!("{prefix}{name}");
            let required = if required.contains(&name.as_str()) {
                "required"
            } else if prop.get("default").is_some() {
                "optional, defaulted"
            } else {
                "optional"
            };
            rows.push(FieldRow {
                path: path.clone(),
                leaf_at: prefix.len(),
                depth,
                ty: self.type_html(prop),
                required,
                description: prop["description"].as_str().unwrap_or_default().to_string(),
            });
            // Descend into objects (through arrays and refs), not into maps or other kinds.
            let (inner, suffix) = match prop["type"].as_str() {
                Some("array") => (&prop["items"], "[]."),
                _ => (prop, "."),
            };
            if let Some(target) = Self::target(inner) {
                let t = &self.schemas[target];
                if t["properties"].is_object() && !Self::is_kind(t) && !visiting.iter().any(|v| v == target) {
                    visiting.push(target.to_string());
                    self.walk(target, &format!("{path}{suffix}"), depth + 1, rows, visiting);
                    visiting.pop();
                }
            }
        }
    }

    fn fields_table(&self, key: &str) -> String {
        let short = Self::short(key);
        let mut out = String::from(
            "<div class=\"table\"><table class=\"fields\">\n<thead><tr><th>Field</th><th>Type</th><th>Required</th><th>Description</th></tr></thead>\n<tbody>\n",
        );
        for row in self.fields(key) {
            let id = format!("{short}.{}", row.path.replace("[]", ""));
            let _ = writeln!(
                out,
                "<tr id=\"{id}\"><td class=\"field d{depth}\"><a class=\"anchor\" href=\"#{id}\"><code><span class=\"parent\">{parent}</span>{leaf}</code></a></td><td class=\"type\">{ty}</td><td class=\"{req_class}\">{required}</td><td>{desc}</td></tr>",
                id = esc(&id),
                depth = row.depth.min(4),
                parent = esc(&row.path[..row.leaf_at]),
                leaf = esc(&row.path[row.leaf_at..]),
                ty = row.ty,
                req_class = if row.required == "required" { "req yes" } else { "req" },
                required = row.required,
                desc = esc(&row.description),
            );
        }
        out.push_str("</tbody>\n</table></div>\n");
        out
    }

    /// The schemas in reading order: this group's kinds, this group's other types, the rest.
    fn ordered_schemas(&self) -> Vec<&'a str> {
        let ours = |k: &str| {
            self.schemas[k]["x-kubernetes-group-version-kind"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|g| g["group"].as_str() == Some(self.group.as_str()))
        };
        let mut keys: Vec<&str> = self.schemas.keys().map(String::as_str).collect();
        let rank = |k: &str| {
            if ours(k) {
                0
            } else if !k.starts_with("io.k8s.") {
                1
            } else {
                2
            }
        };
        keys.sort_by_key(|k| (rank(k), Self::short(k).to_string()));
        keys
    }

    /// The operations: (method, path, operation).
    fn operations(&self) -> Vec<(String, String, &'a Value)> {
        let mut ops = vec![];
        for (path, item) in self.doc["paths"].as_object().into_iter().flatten() {
            for (method, op) in item.as_object().into_iter().flatten() {
                if op.get("x-kubernetes-action").is_some() {
                    ops.push((method.to_uppercase(), path.clone(), op));
                }
            }
        }
        ops
    }

    /// A parameter, `$ref`s resolved.
    fn parameter(&self, p: &'a Value) -> &'a Value {
        match p["$ref"].as_str().and_then(|r| r.strip_prefix("#/components/parameters/")) {
            Some(name) => &self.doc["components"]["parameters"][name],
            None => p,
        }
    }

    fn response(&self, r: &'a Value) -> &'a Value {
        match r["$ref"].as_str().and_then(|r| r.strip_prefix("#/components/responses/")) {
            Some(name) => &self.doc["components"]["responses"][name],
            None => r,
        }
    }

    fn description(&self, key: &str) -> String {
        self.schemas.get(key).and_then(|s| s["description"].as_str()).unwrap_or_default().to_string()
    }

    fn kind_key(&self, kind: &str) -> Result<String> {
        self.schemas
            .iter()
            .find(|(_, s)| {
                s["x-kubernetes-group-version-kind"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|g| g["kind"].as_str() == Some(kind) && g["group"].as_str() == Some(self.group.as_str()))
            })
            .map(|(k, _)| k.clone())
            .ok_or_else(|| anyhow!("the OpenAPI document has no schema of kind {kind}"))
    }

    /// The resource's facts as a two-column table.
    fn facts(&self) -> String {
        let r = self.resource;
        let rows = vec![
            vec!["API group".into(), code(&self.group)],
            vec!["Version".into(), code(&self.version)],
            vec!["Kind".into(), format!("<a href=\"reference.html#{0}\">{0}</a>", esc(r.kind))],
            vec!["List kind".into(), format!("<a href=\"reference.html#{0}\">{0}</a>", esc(r.list_kind))],
            vec!["Resource (plural)".into(), code(r.name)],
            vec!["Singular".into(), code(r.singular_name)],
            vec!["Short names".into(), r.short_names.iter().map(|s| code(s)).collect::<Vec<_>>().join(", ")],
            vec!["Categories".into(), r.categories.iter().map(|s| code(s)).collect::<Vec<_>>().join(", ")],
            vec!["Scope".into(), if r.namespaced { "Namespaced".into() } else { "Cluster".into() }],
            vec!["Verbs".into(), r.verbs.iter().map(|s| code(s)).collect::<Vec<_>>().join(", ")],
        ];
        table("facts", &["", ""], &rows)
    }
}

// ---------------------------------------------------------------------------------------------
// Examples: the demo catalog through the real mapping.

struct Examples {
    /// The demo catalog's records, tier 1 then tier 2.
    tiers: [Vec<BackupRecord>; 2],
    /// Every KlioBackup, as the service serves them (without resourceVersion, which depends on
    /// when the catalog was read).
    objects: Vec<Value>,
    /// The same, as the catalog holds them.
    backups: Vec<Arc<snapshot::Backup>>,
    /// The Klio server name the service uses by default.
    server: String,
}

impl Examples {
    fn build() -> Result<Self> {
        let server = default_of(&api_server_command()?, "hostname")?;
        // Read over the Kopia protocol, as the service reads a Klio server.
        let shared = crate::demo::read_sample_catalog()?;
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
            objects.push(v);
        }
        Ok(Self { tiers, objects, backups: snap.backups, server })
    }

    fn object(&self, name: &str) -> Result<&Value> {
        self.objects
            .iter()
            .find(|o| o["metadata"]["name"].as_str() == Some(name))
            .ok_or_else(|| anyhow!("the demo catalog has no backup {name}"))
    }

    fn record(&self, cluster: &str, id: &str) -> Result<&BackupRecord> {
        self.tiers
            .iter()
            .flatten()
            .find(|r| &*r.cluster_name == cluster && &*r.name == id)
            .ok_or_else(|| anyhow!("the demo catalog has no record {cluster}/{id}"))
    }
}

fn pretty(v: &impl serde::Serialize) -> Result<String> {
    Ok(serde_json::to_string_pretty(v)?)
}

// ---------------------------------------------------------------------------------------------
// The kubectl conformance suite: its commands and golden outputs.

struct KubectlCase {
    id: String,
    exit_code: i32,
    args: Vec<String>,
    stdout: String,
    stderr: String,
}

struct KubectlSuite {
    cases: Vec<KubectlCase>,
}

impl KubectlSuite {
    fn load(dir: &Path) -> Result<Self> {
        let script_path = dir.join("kubectl.sh");
        let script = std::fs::read_to_string(&script_path).with_context(|| {
            format!("reading {} (pass --conformance-dir to point at the conformance suite)", script_path.display())
        })?;
        let mut vars: BTreeMap<String, String> = BTreeMap::new();
        let mut cases = vec![];
        let mut heredoc: Option<String> = None;
        for line in script.lines() {
            // Skip here-documents (embedded Python has its own `def`s).
            if let Some(end) = &heredoc {
                if line.trim() == end {
                    heredoc = None;
                }
                continue;
            }
            if let Some((_, rest)) = line.split_once("<<") {
                let word: String = rest
                    .trim_start_matches('-')
                    .trim_start()
                    .trim_start_matches(['\'', '"'])
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if !word.is_empty() {
                    heredoc = Some(word);
                }
            }
            let line = line.trim();
            if let Some((name, value)) = line.split_once('=') {
                if !name.is_empty()
                    && name.bytes().all(|b| b.is_ascii_uppercase() || b == b'_')
                    && !value.starts_with('(')
                    && !value.contains("$(")
                {
                    if let Ok(words) = shell_words(value, &vars) {
                        if words.len() == 1 {
                            vars.insert(name.to_string(), words[0].clone());
                        }
                    }
                }
            }
            let Some(rest) = line.strip_prefix("def ") else { continue };
            let words = shell_words(rest, &vars).with_context(|| format!("{}: {line}", script_path.display()))?;
            let [id, rc, _mode, base, args @ ..] = words.as_slice() else {
                bail!("{}: a def line with too few words: {line}", script_path.display());
            };
            // `out,err` names the two streams' files when they differ.
            let (out_base, err_base) = base.split_once(',').unwrap_or((base, base));
            let read = |ext: &str| -> Result<String> {
                let base = if ext == "out" { out_base } else { err_base };
                let path = dir.join("expected").join(format!("{base}.{ext}"));
                match std::fs::read_to_string(&path) {
                    Ok(text) => Ok(text),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
                    Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
                }
            };
            cases.push(KubectlCase {
                id: id.clone(),
                exit_code: rc.parse().with_context(|| format!("exit code of {id}"))?,
                args: args.to_vec(),
                stdout: read("out")?,
                stderr: read("err")?,
            });
        }
        if cases.is_empty() {
            bail!("{} defines no kubectl case (lines starting with `def`)", script_path.display());
        }
        Ok(Self { cases })
    }

    fn case(&self, id: &str) -> Option<&KubectlCase> {
        self.cases.iter().find(|c| c.id == id)
    }
}

/// Splits a line into words as bash would for the simple forms the script uses: '…', "…" with
/// $VAR and ${VAR}, bare words with $VAR, backslash escapes; stops at an unquoted `#`.
fn shell_words(line: &str, vars: &BTreeMap<String, String>) -> Result<Vec<String>> {
    let mut words = vec![];
    let mut word: Option<String> = None;
    let mut chars = line.chars().peekable();
    let expand = |chars: &mut std::iter::Peekable<std::str::Chars>| -> Result<String> {
        let braced = chars.peek() == Some(&'{');
        if braced {
            chars.next();
        }
        let mut name = String::new();
        while let Some(&c) = chars.peek() {
            if c.is_ascii_alphanumeric() || c == '_' {
                name.push(c);
                chars.next();
            } else {
                break;
            }
        }
        if braced && chars.next() != Some('}') {
            bail!("unsupported parameter expansion in {line:?}");
        }
        vars.get(&name).cloned().ok_or_else(|| anyhow!("unknown variable ${name} in {line:?}"))
    };
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' => {
                if let Some(w) = word.take() {
                    words.push(w);
                }
            }
            '#' if word.is_none() => break,
            '\'' => {
                let w = word.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => w.push(c),
                        None => bail!("unterminated quote in {line:?}"),
                    }
                }
            }
            '"' => {
                word.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => {
                            if let Some(c) = chars.next() {
                                word.as_mut().expect("started").push(c);
                            }
                        }
                        Some('$') => {
                            let value = expand(&mut chars)?;
                            word.as_mut().expect("started").push_str(&value);
                        }
                        Some(c) => word.as_mut().expect("started").push(c),
                        None => bail!("unterminated quote in {line:?}"),
                    }
                }
            }
            '\\' => {
                if let Some(c) = chars.next() {
                    word.get_or_insert_with(String::new).push(c);
                }
            }
            '$' => {
                let value = expand(&mut chars)?;
                word.get_or_insert_with(String::new).push_str(&value);
            }
            c => word.get_or_insert_with(String::new).push(c),
        }
    }
    if let Some(w) = word {
        words.push(w);
    }
    Ok(words)
}

/// A word quoted for a POSIX shell when it needs to be.
fn shell_quote(word: &str) -> String {
    let plain = !word.is_empty()
        && word.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'/' | b':' | b'=' | b',' | b'@' | b'+')
        });
    if plain {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
    }
}

fn command_line(case: &KubectlCase) -> String {
    std::iter::once("kubectl".to_string()).chain(case.args.iter().map(|a| shell_quote(a))).collect::<Vec<_>>().join(" ")
}

/// A terminal: the command, its output, stderr marked, and a non-zero exit status.
fn terminal(case: &KubectlCase) -> String {
    let mut body = format!("<span class=\"prompt\">$ </span>{}\n", esc(&command_line(case)));
    body.push_str(&esc(&case.stdout));
    if !case.stdout.is_empty() && !case.stdout.ends_with('\n') {
        body.push('\n');
    }
    if !case.stderr.is_empty() {
        let _ = write!(body, "<span class=\"stderr\">{}</span>", esc(&case.stderr));
        if !case.stderr.ends_with('\n') {
            body.push('\n');
        }
    }
    if case.exit_code != 0 {
        let _ = writeln!(body, "<span class=\"status\">(exit status {})</span>", case.exit_code);
    }
    format!("<div class=\"code terminal\"><pre><code>{}</code></pre></div>\n", body.trim_end_matches('\n'))
}

// ---------------------------------------------------------------------------------------------
// deploy/: the manifests.

struct Manifest {
    file: String,
    kind: String,
    name: String,
    namespace: String,
}

struct Overlay {
    name: String,
    comment: String,
}

struct Deploy {
    base: Vec<Manifest>,
    overlays: Vec<Overlay>,
    deployment: Value,
    network_policy: Option<Value>,
    pdb: Option<Value>,
}

impl Deploy {
    fn load(dir: &Path) -> Result<Self> {
        let base_dir = dir.join("base");
        let kustomization = read_yaml(&base_dir.join("kustomization.yaml"))
            .context("pass --deploy-dir to point at the deploy/ directory")?;
        let mut base = vec![];
        let mut objects = vec![];
        for file in kustomization.first().and_then(|k| k["resources"].as_array()).into_iter().flatten() {
            let file = file.as_str().ok_or_else(|| anyhow!("a resource that is not a file name"))?;
            for object in read_yaml(&base_dir.join(file))? {
                base.push(Manifest {
                    file: format!("deploy/base/{file}"),
                    kind: object["kind"].as_str().unwrap_or_default().to_string(),
                    name: object["metadata"]["name"].as_str().unwrap_or_default().to_string(),
                    namespace: object["metadata"]["namespace"].as_str().unwrap_or_default().to_string(),
                });
                objects.push(object);
            }
        }
        let find = |kind: &str| objects.iter().find(|o| o["kind"].as_str() == Some(kind)).cloned();
        let deployment = find("Deployment").ok_or_else(|| anyhow!("deploy/base has no Deployment"))?;
        let mut overlays = vec![];
        let mut names: Vec<String> = std::fs::read_dir(dir.join("overlays"))
            .with_context(|| format!("reading {}", dir.join("overlays").display()))?
            .filter_map(|e| e.ok())
            .filter(|e| e.path().join("kustomization.yaml").is_file())
            .filter_map(|e| e.file_name().to_str().map(str::to_string))
            .collect();
        names.sort();
        for name in names {
            let text = std::fs::read_to_string(dir.join("overlays").join(&name).join("kustomization.yaml"))?;
            let comment = text
                .lines()
                .take_while(|l| l.starts_with('#'))
                .map(|l| l.trim_start_matches('#').trim())
                .collect::<Vec<_>>()
                .join("\n");
            overlays.push(Overlay { name, comment });
        }
        Ok(Self { base, overlays, network_policy: find("NetworkPolicy"), pdb: find("PodDisruptionBudget"), deployment })
    }

    fn container(&self) -> &Value {
        &self.deployment["spec"]["template"]["spec"]["containers"][0]
    }

    /// The value the Deployment gives an environment variable.
    fn env(&self, name: &str) -> Option<String> {
        self.container()["env"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|e| e["name"].as_str() == Some(name))
            .and_then(|e| e["value"].as_str().map(str::to_string))
    }

    fn replicas(&self) -> String {
        number_text(&self.deployment["spec"]["replicas"]).unwrap_or_else(|| "1".into())
    }

    fn probe(&self, which: &str, field: &str) -> String {
        number_text(&self.container()[which][field]).unwrap_or_else(|| "?".into())
    }

    fn probe_path(&self, which: &str) -> String {
        self.container()[which]["httpGet"]["path"].as_str().unwrap_or("?").to_string()
    }

    fn secrets(&self) -> Vec<(String, String)> {
        let spec = &self.deployment["spec"]["template"]["spec"];
        let mounts = self.container()["volumeMounts"].as_array().cloned().unwrap_or_default();
        spec["volumes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| {
                let secret = v["secret"]["secretName"].as_str()?;
                let mount = mounts.iter().find(|m| m["name"] == v["name"])?["mountPath"].as_str()?;
                Some((secret.to_string(), mount.to_string()))
            })
            .collect()
    }

    /// "The base requests … and limits …", from the container's resources.
    fn resources_text(&self) -> String {
        let r = &self.container()["resources"];
        let list = |v: &Value| -> String {
            v.as_object()
                .into_iter()
                .flatten()
                .filter_map(|(k, v)| number_text(v).map(|v| format!("{v} {k}")))
                .collect::<Vec<_>>()
                .join(" and ")
        };
        let (requests, limits) = (list(&r["requests"]), list(&r["limits"]));
        match (requests.is_empty(), limits.is_empty()) {
            (false, false) => format!(" The base Deployment requests {requests} and limits the container to {limits}."),
            (false, true) => format!(" The base Deployment requests {requests}."),
            (true, false) => format!(" The base Deployment limits the container to {limits}."),
            (true, true) => String::new(),
        }
    }

    fn egress_ports(&self) -> String {
        let ports: Vec<String> = self
            .network_policy
            .iter()
            .flat_map(|np| np["spec"]["egress"].as_array().cloned().unwrap_or_default())
            .flat_map(|rule| rule["ports"].as_array().cloned().unwrap_or_default())
            .map(|p| {
                format!("{}/{}", number_text(&p["port"]).unwrap_or_default(), p["protocol"].as_str().unwrap_or("TCP"))
            })
            .collect();
        ports.join(", ")
    }
}

fn number_text(v: &Value) -> Option<String> {
    match v {
        Value::Number(n) => Some(n.to_string()),
        Value::String(s) => Some(s.clone()),
        _ => None,
    }
}

fn read_yaml(path: &Path) -> Result<Vec<Value>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let docs: Vec<Value> =
        serde_saphyr::from_multiple(&text).map_err(|e| anyhow!("parsing {}: {e}", path.display()))?;
    Ok(docs.into_iter().filter(|d| !d.is_null()).collect())
}

// ---------------------------------------------------------------------------------------------
// The command line, from clap.

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
    let mut cmd = hide_env(crate::config::Cli::command());
    cmd.build();
    cmd
}

fn subcommand(path: &[&str]) -> Result<clap::Command> {
    let mut cmd = cli();
    for name in path {
        cmd = cmd.find_subcommand(name).cloned().ok_or_else(|| anyhow!("no subcommand {name}"))?;
    }
    Ok(cmd)
}

/// The prefix of the api-server flags' anchors.
const API_SERVER_FLAGS: &str = "api-server";

fn api_server_command() -> Result<clap::Command> {
    subcommand(&["server", "api-server"])
}

fn default_of(cmd: &clap::Command, id: &str) -> Result<String> {
    let arg = cmd.get_arguments().find(|a| a.get_id() == id).ok_or_else(|| anyhow!("no argument {id}"))?;
    Ok(arg.get_default_values().iter().map(|v| v.to_string_lossy().to_string()).collect::<Vec<_>>().join(","))
}

struct Flag {
    flag: String,
    env: Option<String>,
    default: String,
    help: String,
}

/// The flags of `cmd`; global ones only when `globals` (they are listed once, with the root).
fn flags(cmd: &clap::Command, globals: bool) -> Vec<Flag> {
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
                help,
            }
        })
        .collect()
}

/// The anchor of a flag on the configuration page.
fn flag_id(prefix: &str, flag: &str) -> String {
    format!("{prefix}-{}", slug(flag.split(' ').next().unwrap_or_default()))
}

fn flags_table(cmd: &clap::Command, prefix: &str, globals: bool) -> String {
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
            vec![first, inline(&f.help.replace('\n', " "))]
        })
        .collect();
    table("flags", &["Flag", "Meaning"], &rows)
}

fn help_text(cmd: &clap::Command) -> String {
    cmd.clone().render_long_help().to_string()
}

// ---------------------------------------------------------------------------------------------
// The pages.

/// The clients the test suite runs against the service (README.md lists the same).
const VERIFIED_CLIENTS: &str = "Each of these is run against the service by the test suite (`conformance/run`), with what it checks:\n\n- **kubectl** 1.27 to 1.33: `get` (`-o wide`, `-o yaml`, `-o json`, `-o jsonpath`, custom columns, `--show-labels`, `-L`, `-l`, `--field-selector`, `--sort-by`, `--chunk-size`), `get -w`, `explain`, `api-resources`, `api-versions`, the errors, directly and through a front proxy as the aggregation layer forwards ([their output](kubectl.html)).\n- **kube-rs** (Rust, `kube` 5): discovery (legacy, aggregated, one-shot), `Api<DynamicObject>` list and get, errors, label and field selectors, paging, the `watcher` seeing changes.\n- **kubernetes** (Python, the official client): `DynamicClient` discovery (its search loads the core group's `/api/v1` first: the service answers it, empty), list, get, selectors, paging, watch, errors, `CustomObjectsApi`.\n- **@kubernetes/client-node** (JavaScript, the official client, 2.x on Node 22): `CustomObjectsApi` list and get, errors, `KubernetesObjectApi`, `Watch` (a streaming list with its initial-events-end bookmark, and changes), an informer (`makeInformer`).\n\nBehind a kube-apiserver, discovery (`/api`, `/apis`) is the kube-apiserver's; the demo answers `/api`, `/api/`, `/api/v1`, `/apis` and `/apis/` in kube-apiserver's shapes, so libraries that read them work against it unchanged.";

fn index_page(api: &Api, kubectl: &KubectlSuite) -> Page {
    let info = &api.doc["info"];
    let mut lead = md(&format!(
        "{}\n\nKlio keeps the PostgreSQL base backups of CloudNativePG clusters. This service, an aggregated API server registered with the kube-apiserver, shows them as native, read-only Kubernetes objects: `{}.{}`, kind `{}`. `kubectl get`, `-o wide`, `-o yaml`, `-o jsonpath`, `explain` and field selectors work as they do for built-in resources, and access is controlled with ordinary RBAC.",
        info["description"].as_str().unwrap_or_default(),
        api.resource.name,
        api.group_version(),
        api.resource.kind,
    ));
    lead.push_str(
        "<div class=\"note\"><p>The API version is <code>v1alpha1</code>: experimental, and subject to change.</p></div>\n",
    );
    let mut sections = vec![];
    sections.push(section("resource", "The resource", api.facts()));

    let mut arch = md("A request travels like this:");
    arch.push_str(
        "<div class=\"flow\" role=\"img\" aria-label=\"kubectl to kube-apiserver to klio-api to the Klio servers\">\
         <span>kubectl</span><span class=\"arrow\">→</span><span>kube-apiserver<small>aggregation layer</small></span>\
         <span class=\"arrow\">→</span><span>klio-api<small>this service, 2 replicas</small></span>\
         <span class=\"arrow\">→</span><span>Klio server<small>Kopia repository servers, tier 1 and tier 2</small></span></div>\n",
    );
    arch.push_str(&md(
        "- The kube-apiserver forwards every request under `/apis/kliocatalog.enterprisedb.io/v1alpha1` to the service named by the APIService, with the user's identity in request headers, over TLS authenticated by its front-proxy client certificate.\n- The service checks that certificate against the `kube-system/extension-apiserver-authentication` ConfigMap, asks the kube-apiserver whether the user may do what they ask (SubjectAccessReview), and answers from its in-memory snapshot of the Klio catalog.\n- In the background it reads each Klio server's catalog the way Klio's own tools do: through Kopia's repository protocol (one long-lived gRPC stream over HTTP/2 and TLS 1.3, mutual TLS, the server pinned by its certificate), as `snapshot_reader@klio`. Each read lists Klio's snapshots (one `FindManifests` per snapshot kind) and reads only the backups it has not seen before: per new backup its metadata snapshot's manifest, root directory and `metadata.json`. Everything behind a manifest ID is immutable, so an unchanged catalog costs the listings only. Requests never wait on Klio once the first snapshot exists: if Klio becomes unreachable the last catalog read is served, with a warning.\n- Backups on tier 1 and tier 2 are merged on cluster and backup name: a backup on both is one object that says so, with the Kopia snapshot IDs of each tier.",
    ));
    sections.push(section("architecture", "How it works", arch));

    let mut quick = md("Try it without a cluster: the demo runs certificates, a sample catalog on two Klio tiers served by two Kopia-protocol servers of ours (the same protocol a real Klio server speaks), the API service and a kubeconfig, all on 127.0.0.1.");
    quick.push_str(&pre("cargo run --release -- demo\nexport KUBECONFIG=/tmp/klio-api-demo-<pid>/kubeconfig   # the demo prints the path", None));
    if let Some(case) = kubectl.case("get") {
        quick.push_str(&terminal(case));
    }
    quick.push_str(&md("More commands and their real output: [kubectl](kubectl.html)."));
    sections.push(section("quick-start", "Quick start", quick));

    sections.push(section("clients", "Verified clients", md(VERIFIED_CLIENTS)));

    let pages = [
        ("install.html", "Installation", "deploying with kustomize (cert-manager or your own CA), the Secrets, the Klio server address."),
        ("configuration.html", "Configuration", "every flag and environment variable of every command."),
        ("reference.html", "API reference", "KlioBackup and every field, the endpoints, labels and annotations, columns, field selectors, errors."),
        ("examples.html", "Examples", "complete objects as the service serves them, and the Klio records they come from."),
        ("kubectl.html", "kubectl", "the commands that work, with their real output."),
        ("troubleshooting.html", "Troubleshooting", "certificates, an APIService that is not Available, 401 and 403, Klio unreachable, namespaces stuck Terminating."),
        ("operations.html", "Operations", "health endpoints, metrics, logs, shutdown, upgrades."),
    ];
    let mut list = String::from("<ul class=\"pages\">\n");
    for (file, title, what) in pages {
        let _ = writeln!(list, "<li><a href=\"{file}\">{}</a>: {}</li>", esc(title), esc(what));
    }
    list.push_str("</ul>\n");
    sections.push(section("pages", "This documentation", list));
    Page { file: "index.html", title: "Klio API service", lead, sections }
}

fn install_page(api: &Api, deploy: &Deploy) -> Result<Page> {
    let lead = md("The manifests are under `deploy/`: a kustomize base and two overlays that differ in where the serving certificate comes from. Everything goes into the `default` namespace, except the Role that reads the authentication ConfigMap, which must live in `kube-system`.");
    let mut sections = vec![];

    sections.push(section(
        "prerequisites",
        "Prerequisites",
        md("- A Kubernetes cluster with the aggregation layer enabled (the kube-apiserver's `--requestheader-*` and `--proxy-client-*` flags; managed clusters and kubeadm have it), and `kubectl` with cluster-admin rights: the installation creates cluster-wide RBAC and an APIService.\n- A running Klio server, whose base (tier-1) Kopia repository server is reachable from the cluster (`https://<klio-server>:51515` by default; tier 2, if any, on `51516`), and its TLS certificate (`tls.crt` of the Klio server's Secret).\n- A client certificate for the Klio server, issued by the CA the Klio server trusts for clients, whose common name is `snapshot_reader@<hostname>`, with `<hostname>` the value of `CLIENT_BASE_HOSTNAME` (`klio` by default). See the Klio documentation to issue one.\n- Read access for that identity in the Klio server's repositories (Klio 0.0.13 and later no longer grant it): see [step 5](#grant-access).\n- For the `cert-manager` overlay: cert-manager, including its CA injector."),
    ));

    let mut image = md("Build the image from the repository root (the build stage compiles the release binary; the runtime stage is Debian slim with OpenSSL, running as user 65532):");
    image.push_str(&pre("docker build -f deploy/Dockerfile -t klio-api .", None));
    image.push_str(&md("Push it where your cluster pulls from, and point the Deployment at it with kustomize's `images` (see [your own overlay](#overlay)). The base uses `klio-api:latest`."));
    sections.push(section("image", "1. Build the image", image));

    let mut secrets_html = md(
        "The Deployment mounts three Secrets. Create the two Klio ones yourself, in the namespace of the Deployment:",
    );
    let describe = |secret: &str| -> &str {
        match secret {
            "klio-server-tls" => "The Klio server's own certificate under the key `tls.crt` (the one in the Klio server's Secret): as Kopia's client does, the service accepts the server whose certificate has the same SHA-256. A CA certificate that issued the server's certificate works too (then the URL's host must be in its names).",
            "klio-client-tls" => "The client certificate and key the service presents to Klio (`tls.crt`, `tls.key`; PKCS#1, PKCS#8 or SEC1 key). Its CN must be `snapshot_reader@<CLIENT_BASE_HOSTNAME>`; the service refuses to start otherwise, and the Klio server refuses sessions whose identity is not the certificate's.",
            "klio-api-tls" => "The service's own serving certificate (`tls.crt`, `tls.key`), presented to the kube-apiserver. The cert-manager overlay creates it; with the static-CA overlay you create it (and keep `ca.crt` beside it).",
            _ => "",
        }
    };
    let rows: Vec<Vec<String>> = deploy
        .secrets()
        .iter()
        .map(|(secret, mount)| vec![code(secret), code(mount), inline(describe(secret))])
        .collect();
    secrets_html.push_str(&table("secrets", &["Secret", "Mounted at", "What it holds"], &rows));
    secrets_html.push_str(&pre(
        "kubectl -n default create secret generic klio-server-tls --from-file=tls.crt=klio-server.crt\nkubectl -n default create secret tls klio-client-tls --cert=snapshot_reader.crt --key=snapshot_reader.key",
        None,
    ));
    secrets_html.push_str(&md("The service re-reads the serving certificate files every few seconds and switches to a renewed certificate without a restart. The Klio files are checked at start-up and read again for every new connection to Klio, so a renewed Klio server or client certificate is picked up without a restart."));
    sections.push(section("secrets", "2. Create the Secrets", secrets_html));

    // CLIENT_BASE_* variables.
    let cmd = api_server_command()?;
    let rows: Vec<Vec<String>> = flags(&cmd, false)
        .into_iter()
        .filter(|f| f.env.as_deref().is_some_and(|e| e.starts_with("CLIENT_BASE_")))
        .map(|f| {
            let env = f.env.unwrap_or_default();
            let set = deploy.env(&env).map(|v| code(&v)).unwrap_or_else(|| "<em>not set</em>".into());
            let flag = f.flag.split(' ').next().unwrap_or_default();
            let link =
                format!("<a href=\"configuration.html#{}\">{}</a>", esc(&flag_id(API_SERVER_FLAGS, flag)), code(flag));
            vec![code(&env), set, link, inline(&f.help.replace('\n', " "))]
        })
        .collect();
    let mut vars = md("The container is configured with the product's `CLIENT_BASE_*` environment variables (each is also a flag; the [configuration reference](configuration.html) lists everything). The values the base Deployment sets:");
    vars.push_str(&table("vars", &["Variable", "Base Deployment", "Flag", "Meaning"], &rows));
    vars.push_str(&md(
        "`CLIENT_BASE_URL` is a placeholder in the base: set it to your Klio server's address in your own overlay.",
    ));
    sections.push(section("variables", "3. The CLIENT_BASE_* variables", vars));

    let mut overlay = md("Make a directory of your own next to (or outside) the repository, with a `kustomization.yaml` that takes one of the overlays and sets the image and the Klio server address. A strategic-merge patch matches the container and the variable by name:");
    overlay.push_str(&pre(EXAMPLE_OVERLAY, Some("my-klio-api/kustomization.yaml")));
    overlay.push_str(&md("Replace `REGISTRY/klio-api:TAG` and the URL. With several Klio servers, either run one service per server (each with its own API group: `--api-group`, and an APIService for that group) or give one service several servers with `--klio-server` (object names then start with the server's name)."));
    sections.push(section("overlay", "4. Your own overlay", overlay));

    let mut grant = md("The service reads Klio's snapshots as `snapshot_reader@<CLIENT_BASE_HOSTNAME>`. Kopia lets an identity see other hosts' snapshots only when the repository's ACLs say so, and filters the rest out **without an error**. Klio 0.0.7 to 0.0.12 set that up by itself at every start; Klio 0.0.13 and later create repositories without ACLs, where the reader sees no backup at all. Grant it once per repository (tier 1, and tier 2 if you have one), in the Klio server's container, with the same Kopia configuration the running `kopia server start` uses (its `--config-file`, and the repository password in `KOPIA_PASSWORD`; for tier 2 the read-write configuration):");
    grant.push_str(&pre(
        "kopia --config-file=<config> server acl enable\nkopia --config-file=<config> server acl add --user=snapshot_reader@klio --access=READ --target=type=snapshot",
        Some("in the Klio server's pod, per tier"),
    ));
    grant.push_str(&md("`acl enable` also installs Kopia's default entries (each host keeps full access to its own snapshots), which is what Klio's clients need; it answers `ACLs already enabled` on a repository that has them. Kopia authorizes a session when it starts; the service opens a new session whenever it sees no backups, so the backups appear within one refresh. Until then `/readyz?verbose` says `no backups visible to snapshot_reader@klio` with this step, and the service logs it once."));
    sections.push(section("grant-access", "5. Let the reader see the backups", grant));

    let mut apply = String::new();
    for o in &deploy.overlays {
        let _ = writeln!(
            apply,
            "<h3 id=\"overlay-{}\">{}</h3>",
            esc(&slug(&o.name)),
            code(&format!("deploy/overlays/{}", o.name))
        );
        apply.push_str(&md(&o.comment.replace('\n', " ")));
        match o.name.as_str() {
            "cert-manager" => {
                apply.push_str(&pre(
                    &format!("kubectl apply -k deploy/overlays/{}    # or your overlay built on it", o.name),
                    None,
                ));
                apply.push_str(&md("cert-manager issues `klio-api-tls` from a self-signed Issuer and its CA injector copies the certificate into the APIService's `caBundle` (the `cert-manager.io/inject-ca-from` annotation). Renewals are picked up by the running pods."));
            }
            "static-ca" => {
                apply.push_str(&md("Issue a serving certificate for the DNS names `klio-api`, `klio-api.default` and `klio-api.default.svc` with your CA, store it with the CA beside it, and put the CA into the overlay's `caBundle` (base64 of the PEM) before applying: the overlay ships a placeholder that the kube-apiserver cannot use."));
                apply.push_str(&pre(
                    &format!("kubectl -n default create secret generic klio-api-tls \\\n  --from-file=tls.crt=klio-api.crt --from-file=tls.key=klio-api.key --from-file=ca.crt=ca.crt\nbase64 -w0 ca.crt    # the caBundle value\nkubectl apply -k deploy/overlays/{}    # or your overlay built on it", o.name),
                    None,
                ));
            }
            other => apply.push_str(&pre(&format!("kubectl apply -k deploy/overlays/{other}"), None)),
        }
    }
    sections.push(section("apply", "5. Apply an overlay", apply));

    let mut what = md("What `deploy/base` creates (both overlays add to it):");
    let rows: Vec<Vec<String>> = deploy
        .base
        .iter()
        .map(|m| {
            vec![
                esc(&m.kind),
                code(&m.name),
                if m.namespace.is_empty() { "<em>cluster</em>".into() } else { code(&m.namespace) },
                code(&m.file),
            ]
        })
        .collect();
    what.push_str(&table("manifests", &["Kind", "Name", "Namespace", "File"], &rows));
    what.push_str(&md(&format!(
        "The Deployment runs {} replicas with a PodDisruptionBudget, spread across nodes, as a non-root user with a read-only root filesystem and no capabilities. The RBAC is what the code needs and no more: read the one authentication ConfigMap, create TokenReviews and SubjectAccessReviews (`system:auth-delegator`), and a ClusterRole that lets users get, list and watch `{}`, aggregated into the built-in `view`, `edit` and `admin` roles so that existing users can list backups without new bindings. Why two replicas: see [namespaces stuck Terminating](troubleshooting.html#namespace-deletion).",
        deploy.replicas(),
        api.resource.name,
    )));
    sections.push(section("manifests", "What gets installed", what));

    let mut verify =
        md("The APIService becomes `Available` once a pod is ready, which is once it has read the catalog:");
    verify.push_str(&pre(
        &format!("kubectl get apiservice v1alpha1.{group}\nkubectl -n default rollout status deployment/klio-api\nkubectl api-resources --api-group={group}\nkubectl get {}", api.resource.name, group = api.group),
        None,
    ));
    verify.push_str(&md("If the APIService does not become Available, see [troubleshooting](troubleshooting.html#apiservice-not-available)."));
    sections.push(section("verify", "6. Check it works", verify));

    let mut uninstall = md("Delete the APIService **first**, then the rest. An APIService whose backend is gone makes API discovery fail for every client and stops namespace deletion cluster-wide (see [why](troubleshooting.html#namespace-deletion)).");
    uninstall.push_str(&pre(&format!("kubectl delete apiservice v1alpha1.{}\nkubectl delete -k deploy/overlays/cert-manager    # the overlay you applied", api.group), None));
    sections.push(section("uninstall", "Uninstall", uninstall));

    Ok(Page { file: "install.html", title: "Installation", lead, sections })
}

/// The overlay the installation guide shows (tests/deploy.rs renders it with kustomize).
pub const EXAMPLE_OVERLAY: &str = "apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - ../klio-api/deploy/overlays/cert-manager   # or .../static-ca
images:
  - name: klio-api
    newName: REGISTRY/klio-api
    newTag: TAG
patches:
  - patch: |-
      apiVersion: apps/v1
      kind: Deployment
      metadata:
        name: klio-api
        namespace: default
      spec:
        template:
          spec:
            containers:
              - name: api-server
                env:
                  - name: CLIENT_BASE_URL
                    value: https://klio-server.klio.svc:51515
";

fn configuration_page() -> Result<Page> {
    let root = cli();
    let api_server = api_server_command()?;
    let lead = md("Every setting is a flag; most also read an environment variable (a flag given on the command line wins). The names of the `CLIENT_BASE_*` variables are those of the product's Deployment, so that Deployment works by swapping the image. This page is generated from the command line definition itself.");
    let mut sections = vec![];
    let mut commands = String::new();
    let rows: Vec<Vec<String>> = [
        (vec!["server", "api-server"], "#server-api-server"),
        (vec!["catalog", "serve"], "#catalog-serve"),
        (vec!["demo"], "#demo"),
        (vec!["docs"], "#docs"),
    ]
    .iter()
    .map(|(path, anchor)| -> Result<Vec<String>> {
        let cmd = subcommand(path)?;
        Ok(vec![
            format!("<a href=\"{anchor}\">{}</a>", code(&format!("klio-api {}", path.join(" ")))),
            esc(&cmd.get_about().map(|a| a.to_string()).unwrap_or_default()),
        ])
    })
    .collect::<Result<_>>()?;
    commands.push_str(&table("commands", &["Command", "What it does"], &rows));
    commands.push_str(&md("Global flags, accepted by every command:"));
    commands.push_str(&flags_table(&root, "global", true));
    commands.push_str(&md("`KLIO_API_LOG` sets the log filter (`tracing` syntax, e.g. `debug` or `info,klio_api=debug`; default `info`). Logs go to standard error."));
    sections.push(section("commands", "Commands", commands));

    let mut server = md("The production entry point (the container's command). The `auth` group of flags is named as in Kubernetes' own aggregated API servers (`k8s.io/apiserver`).");
    server.push_str(&flags_table(&api_server, API_SERVER_FLAGS, false));
    server.push_str(&md("Full help text:"));
    server.push_str(&pre(&help_text(&api_server), Some("klio-api server api-server --help")));
    sections.push(section("server-api-server", "klio-api server api-server", server));

    let catalog = subcommand(&["catalog", "serve"])?;
    let mut cat = md("The server side of Kopia's repository protocol, as a Klio server's `kopia server` speaks it to a reader (TLS 1.3, client certificate required and checked against the session's `kopia-username@kopia-hostname`, Klio's labels and tags, snapshot manifests, directory and indirect objects, Kopia's error codes, ACLs), over a directory of backup records: each `<cluster>/<backup>.json` is a backup's `metadata.json`, served with the backup's metadata, PGDATA, pg_control and tablespace snapshots. The demo and the tests use it; it can stand in for a Klio server in a test cluster.");
    cat.push_str(&flags_table(&catalog, "catalog-serve", false));
    sections.push(section("catalog-serve", "klio-api catalog serve", cat));

    let demo = subcommand(&["demo"])?;
    let mut d = md("Everything on 127.0.0.1 in one process: a CA and certificates, a sample catalog on two tiers served by two Kopia-protocol servers (`catalog serve`), the API service reading them as it reads a real Klio server, and a kubeconfig with an admin client certificate. Logs are text unless `KLIO_API_LOG_FORMAT` says otherwise.");
    d.push_str(&flags_table(&demo, "demo", false));
    sections.push(section("demo", "klio-api demo", d));

    let docs = subcommand(&["docs"])?;
    let mut dd =
        md("Writes this site. `cargo test --test docs` fails when `docs/site` is not what the command writes.");
    dd.push_str(&flags_table(&docs, "docs", false));
    sections.push(section("docs", "klio-api docs", dd));

    Ok(Page { file: "configuration.html", title: "Configuration reference", lead, sections })
}

fn reference_page(api: &Api, examples: &Examples) -> Result<Page> {
    let kind_key = api.kind_key(api.resource.kind)?;
    let lead = md(&format!(
        "`{}` in API group `{}`, version `{}`: {} Generated from `{OPENAPI_PATH}`, the document the service's types, routes and published `/openapi/v2` and `/openapi/v3` are built from.",
        api.resource.kind,
        api.group,
        api.version,
        api.description(&kind_key)
    ));
    let mut sections = vec![];
    sections.push(section("resource", "Resource", api.facts()));

    // Endpoints.
    let mut ep = String::new();
    for (method, path, op) in api.operations() {
        let _ = writeln!(
            ep,
            "<h3 id=\"{}\">{} {}</h3>",
            esc(op["operationId"].as_str().unwrap_or_default()),
            esc(&method),
            code(&path)
        );
        ep.push_str(&md(&format!(
            "{} (Kubernetes verb `{}`{}).",
            capitalize(op["description"].as_str().unwrap_or_default()),
            op["x-kubernetes-action"].as_str().unwrap_or_default(),
            if op["parameters"].as_array().into_iter().flatten().any(|p| api.parameter(p)["name"] == "watch") {
                ", and `watch` with `?watch=true`"
            } else {
                ""
            }
        )));
        let path_params = api.doc["paths"][&path]["parameters"].as_array().cloned().unwrap_or_default();
        let rows: Vec<Vec<String>> = path_params
            .iter()
            .chain(op["parameters"].as_array().into_iter().flatten())
            .map(|p| {
                let p = api.parameter(p);
                vec![
                    code(p["name"].as_str().unwrap_or_default()),
                    esc(p["in"].as_str().unwrap_or_default()),
                    esc(&Api::scalar(&p["schema"])),
                    esc(p["description"].as_str().unwrap_or_default()),
                ]
            })
            .collect();
        ep.push_str(&table("params", &["Parameter", "In", "Type", "Description"], &rows));
        let rows: Vec<Vec<String>> = op["responses"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(code_text, r)| {
                let r = api.response(r);
                let schema = r["content"]["application/json"]["schema"]["$ref"].as_str().and_then(Api::ref_key);
                vec![
                    code(code_text),
                    esc(r["description"].as_str().unwrap_or_default()),
                    schema.map(Api::type_link).unwrap_or_default(),
                ]
            })
            .collect();
        ep.push_str(&table("responses", &["Status", "Meaning", "Body"], &rows));
    }
    ep.push_str(&md("Every other method on these paths (POST, PUT, PATCH, DELETE) is answered `405 MethodNotAllowed`: backups are created and deleted by Klio, never through this API."));
    ep.push_str(&md("Representations, chosen from the `Accept` header as kube-apiserver chooses them (the first entry the service can produce; protobuf is not produced, so the JSON entry that follows it is taken, and with none `406`):\n\n- `application/json`: the objects (`KlioBackup`, `KlioBackupList`).\n- `application/yaml`: the same in YAML, for gets and lists (keys sorted, as `kubectl -o yaml` prints them). A watch cannot be YAML (`406`, as in kube-apiserver); errors are `Status` objects in YAML for such a client.\n- `application/json;as=Table;v=v1;g=meta.k8s.io` (or `v1beta1`): the `Table` `kubectl get` prints, for lists, gets and watches; `includeObject` sets what each row carries.\n- `application/json;as=PartialObjectMetadataList;v=v1;g=meta.k8s.io` for lists and `as=PartialObjectMetadata` for gets and watches (`v1` or `v1beta1`): only each object's `metadata`, what client-go's metadata client and metadata informers ask for. A list asked for as `PartialObjectMetadata`, or an object as `PartialObjectMetadataList`, is kube-apiserver's `406`."));
    ep.push_str(&md("Watches (`?watch=true`) stream one JSON event per line: `ADDED`, `MODIFIED`, `DELETED`, `BOOKMARK` (with `allowWatchBookmarks=true`: every 25 seconds, under the 30 seconds after which the JavaScript client gives up on a quiet watch, and 2 seconds before the watch's `timeoutSeconds` ends it, as kube-apiserver does) and `ERROR` (a `Status`: `410 Expired` when the resourceVersion is no longer kept or is not one of this catalog's, such as `1` where there are two sources). A streaming list (client-go's watch-list, KEP-3157), `sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true`, sends the state as `ADDED` events, then a `BOOKMARK` annotated `k8s.io/initial-events-end: \"true\"` at the state's resourceVersion, then changes; as in kube-apiserver 1.34 and later, a watch without resourceVersion (or from `0`) is one too. `sendInitialEvents` without `resourceVersionMatch=NotOlderThan`, and the other combinations kube-apiserver refuses, are `422 Invalid` (`ListOptions.meta.k8s.io \"\" is invalid: ...`, each field error a cause)."));
    sections.push(section("endpoints", "Endpoints", ep));

    // Types.
    for key in api.ordered_schemas() {
        let schema = &api.schemas[key];
        let short = Api::short(key);
        let mut html = md(schema["description"].as_str().unwrap_or_default());
        let gvk: Vec<String> = schema["x-kubernetes-group-version-kind"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|g| {
                let group = g["group"].as_str().unwrap_or_default();
                let version = g["version"].as_str().unwrap_or_default();
                let gv = if group.is_empty() { version.to_string() } else { format!("{group}/{version}") };
                format!(
                    "<code>apiVersion: {}</code>, <code>kind: {}</code>",
                    esc(&gv),
                    esc(g["kind"].as_str().unwrap_or_default())
                )
            })
            .collect();
        if !gvk.is_empty() {
            let _ = writeln!(html, "<p class=\"gvk\">{}</p>", gvk.join("; "));
        }
        if schema["properties"].is_object() {
            html.push_str(&api.fields_table(key));
        } else {
            let _ = writeln!(html, "<p>Type: {}.</p>", esc(&Api::scalar(schema)));
        }
        if key == kind_key {
            html.push_str(&md("Complete objects: [examples](examples.html)."));
        }
        sections.push(section(short, short, html));
    }

    // Labels and annotations.
    let example = examples.object("pg-analytics.backup-20251120010000")?;
    let label_value = |k: &str| example["metadata"]["labels"][k].as_str().map(code).unwrap_or_default();
    let describe_label = |k: &str| -> String {
        match k {
            labels::CLUSTER => "The CloudNativePG cluster, as `spec.clusterName`.".into(),
            labels::SERVER => "The Klio server the backup was read from (`CLIENT_BASE_HOSTNAME`, or the name given with `--klio-server`), as `status.server`.".into(),
            labels::TIER1 => "`\"true\"` when the backup is on tier 1; absent otherwise.".into(),
            labels::TIER2 => "`\"true\"` when the backup is on tier 2; absent otherwise.".into(),
            _ => String::new(),
        }
    };
    let mut la = md("Every KlioBackup carries these labels, so that label selectors (`kubectl get kb -l kliocatalog.enterprisedb.io/cluster=pg-analytics`) and tools that group by label work:");
    let rows: Vec<Vec<String>> = [labels::CLUSTER, labels::SERVER, labels::TIER1, labels::TIER2]
        .iter()
        .map(|k| vec![code(k), inline(&describe_label(k)), label_value(k)])
        .collect();
    la.push_str(&table("labels", &["Label", "Meaning", "Example"], &rows));
    la.push_str(&md("`status.annotations` holds the tier markers and the Kopia manifest IDs of the backup's snapshots, which `kopia snapshot list`, `kopia restore` and Klio's own tools take. Klio stopped recording the IDs in the backup's metadata in 0.0.10, and migrating a backup to tier 2 gives its snapshots new IDs, so the service finds them in each tier's repository (Klio tags every snapshot of a backup with its name), at no extra cost per backup. A record that still carries the annotations (backups made before Klio 0.0.10) keeps its own values. A backup without a visible snapshot of a kind has no annotation for it. Each tablespace in `status.tablespaces` carries its own snapshot's IDs the same way."));
    let ann = &example["status"]["annotations"];
    let mut rows: Vec<Vec<String>> = TIER_ANNOTATIONS
        .iter()
        .enumerate()
        .map(|(i, k)| {
            vec![
                code(k),
                inline(&format!(
                    "Added by the service: `present` when the backup is on tier {}; absent otherwise.",
                    i + 1
                )),
                ann[*k].as_str().map(code).unwrap_or_default(),
            ]
        })
        .collect();
    let describe_id = |k: &str| -> &str {
        match k {
            "klio.io/kopiaManifestID" => {
                "The PGDATA snapshot's manifest ID on tier 1 (on a tablespace: its snapshot's)."
            }
            "klio.io/controlDataKopiaManifestID" => "The pg_control snapshot's manifest ID on tier 1.",
            "klio.io/tier2KopiaManifestID" => {
                "The PGDATA snapshot's manifest ID on tier 2 (on a tablespace: its snapshot's)."
            }
            "klio.io/tier2ControlDataKopiaManifestID" => "The pg_control snapshot's manifest ID on tier 2.",
            _ => "Recorded by Klio in the backup's metadata, copied unchanged.",
        }
    };
    for (k, v) in ann.as_object().into_iter().flatten() {
        if !TIER_ANNOTATIONS.contains(&k.as_str()) {
            rows.push(vec![code(k), inline(describe_id(k)), v.as_str().map(code).unwrap_or_default()]);
        }
    }
    la.push_str(&table("labels", &["Annotation", "Meaning", "Example"], &rows));
    la.push_str(&md("`metadata.uid` is a name-based UUID (version 5) of the server, the cluster and the backup ID: every replica, and every restart, gives a backup the same one. `metadata.creationTimestamp` is when the backup completed (`status.stoppedAt`), which is when Klio adds it to its catalog; it never changes, and `-o wide` counts the `AGE` column from it."));
    la.push_str(&md("`metadata.annotations` is not set. `metadata.resourceVersion` is the revision of the catalog in which the object last changed, one number per source (server and tier) joined by dots. Kopia has no revision, so each number is derived from what every replica sees alike: the modification time, in milliseconds of the Klio server's clock, of the newest snapshot manifest the source lists; a change that adds nothing newer (a deletion) moves it one past the previous number. Replicas that saw the same catalogs give the same resourceVersions, and agree again with the next new backup in any case."));
    sections.push(section("labels-and-annotations", "Labels and annotations", la));

    // Columns.
    let mut cols = md("`kubectl get` prints what the server's Table says. Columns of priority 0 are always shown; `-o wide` adds the others.");
    let rows: Vec<Vec<String>> = crate::api::table::COLUMNS
        .iter()
        .map(|c| {
            vec![
                esc(&c.name.to_uppercase()),
                esc(c.kind),
                if c.priority == 0 { "default".into() } else { "<code>-o wide</code>".into() },
                esc(c.description),
            ]
        })
        .collect();
    cols.push_str(&table("columns", &["Column", "Type", "Shown", "Description"], &rows));
    cols.push_str(&md("See them in [kubectl get -o wide](kubectl.html#get-wide)."));
    sections.push(section("columns", "Table columns", cols));

    let mut fs = md("`fieldSelector` (`kubectl get --field-selector`) accepts these fields, with `=`, `==` and `!=`, comma-separated terms all of which must hold:");
    fs.push_str("<ul>\n");
    for f in crate::api::selectors::SELECTABLE_FIELDS {
        let _ = writeln!(fs, "<li>{}</li>", code(f));
    }
    fs.push_str("</ul>\n");
    fs.push_str(&md("Any other field is answered `400 BadRequest` with kube-apiserver's wording (see [the error](kubectl.html#field-selector-unsupported))."));
    sections.push(section("field-selectors", "Field selectors", fs));

    let mut errs = md("Errors are `Status` objects (`apiVersion: v1`, `kind: Status`) with kube-apiserver's reasons and wording, so kubectl prints them as it prints its own:");
    let mut rows = vec![];
    for (name, r) in api.doc["components"]["responses"].as_object().into_iter().flatten() {
        rows.push(vec![code(name), esc(r["description"].as_str().unwrap_or_default())]);
    }
    errs.push_str(&table("errors", &["Response", "When"], &rows));
    errs.push_str(&md("Besides these: `403 Forbidden` when authorization denies the request, `405 MethodNotAllowed` for writes, `410 Expired` for a resourceVersion or continue token no longer kept, `429 TooManyRequests` (with `Retry-After`) past `--max-requests-inflight` (a list counts until its answer is written, a watch while it starts), past 1000 open watches, or while 32 TokenReviews of other bearer tokens are in flight, and `504 Timeout` past `--request-timeout-seconds` (a list still being written then is cut; a watch ends at its `timeoutSeconds`). When one Klio source fails while others answer, the answer carries a `Warning: 299` header that kubectl prints on stderr. See [troubleshooting](troubleshooting.html)."));
    sections.push(section("errors", "Errors", errs));

    Ok(Page { file: "reference.html", title: "KlioBackup API reference", lead, sections })
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

fn examples_page(api: &Api, examples: &Examples) -> Result<Page> {
    let lead = md(&format!(
        "These objects are produced by the service's own mapping code from the demo catalog (`klio-api demo`), as the service serves them with the default Klio server name `{}`. Served objects also carry `metadata.resourceVersion`, which depends on when the catalog was read and is left out here.",
        examples.server
    ));
    let mut sections = vec![];
    let product = "cluster-example.backup-20251113093137";
    let mut p = md("The product document's example: a backup of `cluster-example` on tier 1.");
    p.push_str(&pre(&pretty(examples.object(product)?)?, Some(&format!("kubectl get kliobackup {product} -o json"))));
    sections.push(section("product-example", "A backup", p));

    let both = "pg-analytics.backup-20251120010000";
    let mut b = md("A backup of a cluster with a tablespace, found on both tiers: one object, with both tier markers.");
    b.push_str(&pre(&pretty(examples.object(both)?)?, Some(&format!("kubectl get kliobackup {both} -o json"))));
    sections.push(section("both-tiers", "A backup on both tiers, with a tablespace", b));

    let selector = crate::api::selectors::FieldSelector::parse("spec.clusterName=pg-orders").map_err(|e| anyhow!(e))?;
    let items: Vec<&Value> =
        examples.objects.iter().zip(&examples.backups).filter(|(_, b)| selector.matches(b)).map(|(o, _)| o).collect();
    let list = json!({
        "apiVersion": api.group_version(),
        "kind": api.resource.list_kind,
        "metadata": {},
        "items": items,
    });
    let mut l = md("A list, filtered with a field selector. Lists carry the catalog's `resourceVersion` in `metadata` (left out here).");
    l.push_str(&pre(
        &pretty(&list)?,
        Some("kubectl get kliobackups --field-selector spec.clusterName=pg-orders -o json"),
    ));
    sections.push(section("list", "A list", l));

    let record = examples.record("cluster-example", "backup-20251113093137")?;
    let mut m = md("What Klio records for the first example: the `metadata.json` of its metadata snapshot (tagged `klio.io/content: metadata` and `klio.io/tag: <backup name>`, on the cluster's host), as the service decodes it:");
    m.push_str(&pre(&pretty(record)?, Some("metadata.json (the fields the service keeps)")));
    m.push_str(&md("How a record becomes a KlioBackup:"));
    let rows: Vec<Vec<String>> = [
        ("`clusterName`.`name`", "`metadata.name` (with several Klio servers: `server`.`clusterName`.`name`)"),
        ("`name`", "`spec.backupID`"),
        ("`clusterName`", "`spec.clusterName`, label `kliocatalog.enterprisedb.io/cluster`"),
        ("`startLsn`, `endLsn`", "`status.startLSN`, `status.endLSN`"),
        ("`startWal`, `endWal`", "`status.startWAL`, `status.endWAL`"),
        ("`startedAt`, `stoppedAt` (Unix seconds)", "`status.startedAt`, `status.stoppedAt` (RFC 3339, UTC)"),
        (
            "`tablespaces[]` (`name`, `oid`, `path`, `annotations`)",
            "`status.tablespaces[]` (an empty `oid` or `path` is left out)",
        ),
        ("`annotations`", "`status.annotations`, plus `klio.io/tier1` / `klio.io/tier2`"),
        (
            "the server and tier it was read from",
            "labels `kliocatalog.enterprisedb.io/server`, `…/tier1`, `…/tier2`; `status.server`",
        ),
        ("`tli`, `segmentSize`, `backupLabel`, `tablespaceMap`, `pgData`", "not shown"),
    ]
    .iter()
    .map(|(from, to)| vec![inline(from), inline(to)])
    .collect();
    m.push_str(&table("mapping", &["Klio record", "KlioBackup"], &rows));
    m.push_str(&md("A record that does not decode, or has an impossible timestamp, is skipped and logged; unknown record fields are ignored. Every field is described in the [reference](reference.html#KlioBackup)."));
    sections.push(section("mapping", "From a Klio record", m));

    Ok(Page { file: "examples.html", title: "Example objects", lead, sections })
}

fn kubectl_page(suite: &KubectlSuite) -> Page {
    let lead = md("Each command below was run with a real kubectl against `klio-api demo`; the outputs are the golden files of the conformance suite (`conformance/kubectl.sh`), which checks them against every kubectl version it finds, so they are what you will see. Any other kubectl usage that only reads works too; writes are refused.");
    let sections = suite
        .cases
        .iter()
        .map(|case| {
            let mut html = terminal(case);
            html.push_str(&kubectl_note(&case.id));
            Section { id: slug(&case.id), title: command_line(case), html }
        })
        .collect();
    Page { file: "kubectl.html", title: "kubectl", lead, sections }
}

/// A sentence about what a conformance case shows, for the ones that need one.
fn kubectl_note(id: &str) -> String {
    let text = match id {
        "api-resources" => "The resource in discovery: its short name and category work wherever a resource name does.",
        "get" => "The server prints the table (the four columns of the product document), ordered by name.",
        "get-wide" => "`-o wide` adds the WAL range, the LSNs in PostgreSQL notation, the duration and the tiers holding the backup.",
        "get-shortname" => "`kb` is the short name.",
        "get-category" => "`klio` is the category: `kubectl get klio` lists every resource in it.",
        "get-sort-by-lsn" => "kubectl sorts on any field of the full objects, which the server sends along with the table rows when asked.",
        "explain" | "explain-status-recursive" => "`kubectl explain` reads the OpenAPI document the service publishes; see the [reference](reference.html#KlioBackup) for the full descriptions.",
        "get-not-found" | "delete-not-allowed" | "field-selector-unsupported" => "Errors are kube-apiserver's, word for word.",
        _ => "",
    };
    md(text)
}

fn troubleshooting_page(api: &Api, deploy: &Deploy) -> Result<Page> {
    let apiservice = format!("v1alpha1.{}", api.group);
    let lead = md("Symptoms, what causes them and how to fix them. Start with the APIService's status and the pods' logs (JSON, one object per line):");
    let mut lead = lead;
    lead.push_str(&pre(
        &format!("kubectl get apiservice {apiservice} -o yaml    # status.conditions\nkubectl -n default get pods -l app=klio-api\nkubectl -n default logs deployment/klio-api\nkubectl get --raw /apis/{}/{}    # discovery through the aggregation layer", api.group, api.version),
        None,
    ));
    let mut sections = vec![];

    sections.push(section(
        "certificates",
        "Certificates",
        md(&format!("Each TLS relationship, and how it goes wrong:

- **The kube-apiserver → the service.** The kube-apiserver verifies the service's serving certificate (`klio-api-tls`) against the APIService's `caBundle`, for the name `klio-api.default.svc`. A mismatch shows as the APIService condition `Available=False`, reason `FailedDiscoveryCheck`, with `x509: certificate signed by unknown authority` or `certificate is valid for ..., not klio-api.default.svc`. With cert-manager, check that the `Certificate` is `Ready` and that the CA injector filled `caBundle` (`kubectl get apiservice {apiservice} -o jsonpath='{{.spec.caBundle}}'`). With the static-CA overlay, check that `caBundle` is the base64 PEM of the CA that signed `klio-api-tls`, not the placeholder.
- **The service → the Klio server.** As Kopia's client does, the service accepts the Klio server whose certificate has the SHA-256 of the first certificate in `CLIENT_BASE_SERVER_CERT_PATH` (`klio-server-tls`), whatever its names and dates; when that file is a CA instead, the server's chain must verify against it for the host named in `CLIENT_BASE_URL`. TLS 1.3 and HTTP/2 only. Failures appear in the logs as `reading the Klio catalog failed`, with the reason, and as a warning on every answer.
- **The service's client certificate for Klio.** Its CN must be `snapshot_reader@<CLIENT_BASE_HOSTNAME>`: the service checks this at start-up and exits with an error naming the expected CN. Klio rejects other certificates.
- **Renewal.** The serving certificate files are re-read every few seconds; a renewed pair is used for new connections (a half-written pair is retried). With the cert-manager overlay the certificate comes from a self-signed Issuer, so it is its own CA: each renewal changes the CA, and the kube-apiserver accepts the new certificate only once the CA injector has updated `caBundle`. A short burst of `FailedDiscoveryCheck` right after a renewal is that; one that lasts means the injector is not running.
- **The front proxy.** The aggregation layer authenticates to the service with its front-proxy client certificate, verified against `requestheader-client-ca-file` from the `kube-system/extension-apiserver-authentication` ConfigMap. If the kube-apiserver was started without `--requestheader-client-ca-file`, aggregation cannot work at all.")),
    ));

    sections.push(section(
        "apiservice-not-available",
        "APIService not Available",
        md(&format!("`kubectl get apiservice {apiservice}` shows `False` under `AVAILABLE`, with a reason:

- `MissingEndpoints`: no pod is ready. A pod is ready once it has read the catalog from at least one Klio source; until then `/readyz` answers 503 and lists every source with its error. Look at the pods' readiness and logs: most often the Klio server cannot be reached (see [below](#klio-unreachable)). Pods that do not start or restart in a loop: a Secret is missing (`kubectl -n default describe pod`), the Klio client certificate has the wrong CN, or the service cannot read the `kube-system/extension-apiserver-authentication` ConfigMap at start-up (it exits with `reading kube-system/extension-apiserver-authentication: …`: the Role and RoleBinding in `kube-system` are missing).
- `ServiceNotFound`: the APIService names a Service that does not exist (`spec.service.name`, `spec.service.namespace`).
- `FailedDiscoveryCheck`: the kube-apiserver reached the pods but could not read `/apis/{}/{}`: a certificate problem (see [certificates](#certificates)), a NetworkPolicy that does not let the kube-apiserver in (the base allows ingress to the HTTPS port from anywhere), or `401`/`403` answered to the aggregator itself (see [401 and 403](#unauthorized-forbidden)).

While the APIService is not Available, every client's discovery reports `couldn't get resource list for {}: the server is currently unable to handle the request`, and namespace deletion stops everywhere: read the [next section](#namespace-deletion) before leaving it so.", api.group, api.version, api.group_version())),
    ));

    let forbidden = crate::auth::authz::Attributes::of(
        "GET",
        &format!("/apis/{}/{}", api.group_version(), api.resource.name),
        None,
    )
    .forbidden_message("jane", "");
    let mut auth = md("**401 Unauthorized** (kubectl: `error: You must be logged in to the server (Unauthorized)`) means the service could not tell who is asking. Requests through the kube-apiserver are authenticated by the front-proxy certificate and the `X-Remote-User` headers, so a 401 there means:

- the front-proxy certificate does not verify against the request-header CA the service knows (from the `kube-system/extension-apiserver-authentication` ConfigMap, re-read every `--authentication-config-refresh-seconds`; a failed re-read keeps the previous CA and is logged), or its CN is not in `requestheader-allowed-names` (from the ConfigMap, or `--requestheader-allowed-names`);
- or the service runs without a kube-apiserver client: no service account token (`automountServiceAccountToken` must stay on) and no `--kubeconfig`. It then logs at start-up that only client certificates authenticate, and without `--client-ca-file` that every request will be answered 401;
- or, for requests sent straight to the service with a bearer token, the TokenReview failed: the `system:auth-delegator` ClusterRoleBinding is missing.

The unauthenticated request is logged at `info` with the reason (target `access`).

**403 Forbidden** means the user is known but RBAC does not allow the request. The message is kube-apiserver's:");
    auth.push_str(&pre(&format!("Error from server (Forbidden): {forbidden}"), None));
    auth.push_str(&md(&format!("The base installs `klio-api:kliobackups-reader` (get, list, watch on `{}`) aggregated into `view`, `edit` and `admin`. Users bound to one of those (cluster-wide, since KlioBackups are cluster-scoped: a RoleBinding in a namespace does not grant them) can read backups. Check with:", api.resource.name)));
    auth.push_str(&pre(
        &format!(
            "kubectl auth can-i list {}.{} --as jane\nkubectl get clusterrole view -o yaml | grep -A3 {}",
            api.resource.name, api.group, api.group
        ),
        None,
    ));
    let denied_ttl = default_of(&api_server_command()?, "authorization_webhook_cache_unauthorized_ttl_seconds")?;
    auth.push_str(&md(&format!("If every request fails with `Internal error occurred: authorization failed: …` (500), even for cluster admins, the SubjectAccessReview itself fails: `system:auth-delegator` is not bound to the service account. Denials are cached for {denied_ttl} seconds (`--authorization-webhook-cache-unauthorized-ttl-seconds`), so a fixed binding takes that long to show.")));
    sections.push(section("unauthorized-forbidden", "401 Unauthorized and 403 Forbidden", auth));

    sections.push(section(
        "klio-unreachable",
        "Klio unreachable",
        md(&format!("The service reads the catalog in the background (every `--catalog-refresh-seconds`, each read bounded by `--klio-timeout-seconds`), so what a Klio outage does depends on whether it has ever read it:

- **Never read** (a new pod while Klio is down): the pod stays unready and requests that reach it are answered `503 ServiceUnavailable` with `the Klio server https://… cannot be reached: …`. `/readyz?verbose` shows `[-]catalog-<server>-tier<n> failed: not read`; the logs say why.
- **Read before**: the pod stays ready and serves the catalog it last read; each answer carries a `Warning` header that kubectl prints on stderr (`Warning: Klio server klio (tier 1) failing since …; serving its catalog as last read 42s ago`), and `/readyz` marks the source `stale`. The metric `klio_catalog_last_success_timestamp_seconds` tells how old the data is. This is deliberate: an unreachable Klio must not make the APIService unavailable.
- **A tier-2 failure never hides tier 1**: its backups are missing from lists until it answers again, with a warning saying so.
- `502` (reason `InternalError`) means the Klio server answered, but did not serve its catalog. The message says why; the common ones:
  - `presented a certificate with SHA-256 … that is neither the certificate in /certs/tls.crt … nor issued by it`: `klio-server-tls` does not hold the Klio server's current certificate (or its CA). Put the certificate of the Klio server's Secret there; the service reads the file again for every connection.
  - `the Kopia server refused the session: PermissionDenied: access denied for snapshot_reader@klio`: the client certificate is not the one the session names, or the Klio server does not know it (its `--tls-ca-file` must have issued it). `missing credentials`: something between the service and Klio dropped the `kopia-*` headers.
  - `TLS handshake failed`: the Klio server did not accept the client certificate (another CA, or not for client authentication), or does not speak TLS 1.3 with HTTP/2 at that address (the address must be the Kopia repository server, port 51515 or 51516 by default, not another Klio port).
  - `Unavailable: not connected to a direct repository`: the Klio server's Kopia server has not opened its repository yet.
- A backup that cannot be read (its metadata does not decode, a content is missing, the snapshot is incomplete) is left out, logged once with the manifest ID, and counted in `klio_catalog_read_errors_total`; it never hides the others.

Things to check: `CLIENT_BASE_URL` (https, host and port of the Kopia repository server), DNS, the client certificate's CN, and the NetworkPolicy: the base only allows egress to {} (the kube-apiserver, Klio's tier-1 and tier-2 Kopia servers, and DNS). If your Klio server listens on another port, add it.", deploy.egress_ports())),
    ));

    sections.push(section(
        "no-backups",
        "No backups listed",
        md("`kubectl get kliobackups` answers `No resources found` although Klio has backups, the pods are ready and no warning is printed: the Klio server's repository does not let `snapshot_reader@klio` see other hosts' snapshots, and Kopia filters them out without an error. That is the default for repositories created by Klio 0.0.13 and later. `/readyz?verbose` then says `no backups visible to snapshot_reader@klio`, and the logs say `the Klio server shows no backups` once. Grant read access as described in [Installation, step 5](install.html#grant-access); the backups appear within one refresh."),
    ));

    let mut ns = md(&format!("Kubernetes deletes a namespace by deleting every namespaced object in it, and to know which kinds of objects exist it asks discovery for **every** API group, aggregated ones included. When an APIService is unavailable, discovery of its group fails, the namespace controller cannot prove the namespace is empty, and every namespace being deleted anywhere in the cluster stays `Terminating`, with the condition `NamespaceDeletionDiscoveryFailure`: `Discovery failed for some groups, 1 failing: unable to retrieve the complete list of server APIs: {}: the server is currently unable to handle the request`. This happens even though KlioBackups are cluster-scoped and no namespace holds one. Other discovery-driven controllers and clients (the garbage collector, `kubectl api-resources`, Helm) report errors as well.", api.group_version()));
    ns.push_str(&md(&format!("That is why the installation is built to keep the APIService Available:

- **{} replicas**, spread across nodes, with a PodDisruptionBudget (`minAvailable: {}`) and a rolling update that never takes a ready pod away first (`maxUnavailable: 0`);
- **fast readiness**: the readiness probe (`{}`) runs every {} seconds, and `/readyz` depends only on having a catalog snapshot, never on Klio answering right now, so a Klio outage does not make the pods unready;
- **a shutdown that drains**: on SIGTERM `/readyz` turns unready first, and the server keeps serving for `--shutdown-delay-seconds` while endpoints move traffic away.",
        deploy.replicas(),
        deploy.pdb.as_ref().and_then(|p| number_text(&p["spec"]["minAvailable"])).unwrap_or_else(|| "?".into()),
        deploy.probe_path("readinessProbe"),
        deploy.probe("readinessProbe", "periodSeconds"),
    )));
    ns.push_str(&md("If namespaces are stuck now, make the APIService Available again (fix the pods), or remove it while you do. Deleting the APIService makes discovery whole again and the namespace controller finishes the stuck namespaces on its next retry; reapplying the overlay brings the APIService back."));
    ns.push_str(&pre(&format!("kubectl get namespace <name> -o jsonpath='{{.status.conditions}}'\nkubectl get apiservice {apiservice}\nkubectl delete apiservice {apiservice}    # unblocks namespace deletion; re-apply later"), None));
    sections.push(section("namespace-deletion", "Namespaces stuck Terminating", ns));

    Ok(Page { file: "troubleshooting.html", title: "Troubleshooting", lead, sections })
}

fn operations_page(deploy: &Deploy) -> Result<Page> {
    let lead = md("Running the service: its health endpoints, metrics, logs, and how it stops.");
    let mut sections = vec![];
    let mut health = md(&format!("Three endpoints answer `GET` without credentials (`--authorization-always-allow-paths`):

- `/livez` and `/healthz`: `ok` whenever the process serves HTTPS. The liveness probe uses `{}` every {} seconds.
- `/readyz`: `200` once a catalog snapshot exists, `503` before that and from the moment shutdown starts. `?verbose` lists every Klio source, one line each, kube style: `[+]catalog-<server>-tier<n> ok`, `[+]… ok (stale: serving the last catalog read)`, `[+]… ok (no backups visible to snapshot_reader@klio; …)`, `[-]… failed: not read`, and ends with `readyz check passed` or `readyz check failed`. It names no address and no error: the probe is open to anyone; the logs and metrics have the details. The readiness probe uses `{}` every {} seconds.

A stale source keeps the pod ready on purpose: see [why](troubleshooting.html#namespace-deletion).",
        deploy.probe_path("livenessProbe"),
        deploy.probe("livenessProbe", "periodSeconds"),
        deploy.probe_path("readinessProbe"),
        deploy.probe("readinessProbe", "periodSeconds"),
    ));
    health.push_str(&pre("$ kubectl -n default port-forward deployment/klio-api 8443 &\n$ curl -sk https://127.0.0.1:8443/readyz\n[+]catalog-klio-tier1 ok\nreadyz check passed", None));
    sections.push(section("health", "Health endpoints", health));

    let mut metrics = md("`GET /metrics` (Prometheus text format) needs authorization like any other request: grant the scraper `get` on the non-resource URL `/metrics` (`nonResourceURLs: [\"/metrics\"]` in a ClusterRole). Request metrics are named after kube-apiserver's; the catalog has its own.");
    let rows = metric_rows()?;
    metrics.push_str(&table("metrics", &["Metric", "Type", "Labels", "Meaning"], &rows));
    metrics.push_str(&md("Useful alerts: `time() - klio_catalog_last_success_timestamp_seconds > 300` (data older than five minutes), `rate(klio_catalog_fetches_total{result=\"error\"}[5m]) > 0`, and a rate of `apiserver_request_total{code=~\"5..\"}`."));
    sections.push(section("metrics", "Metrics", metrics));

    sections.push(section(
        "shutdown",
        "Shutdown and rolling updates",
        md("On SIGTERM (or Ctrl-C) the service:

1. turns `/readyz` unready at once, so the kubelet takes the pod out of the Service's endpoints;
2. keeps serving for `--shutdown-delay-seconds` (default 0) while endpoints and the aggregation layer move traffic away;
3. stops accepting connections and gives open requests and watches `--shutdown-grace-seconds` (default 30) to finish; watches are ended so clients re-establish them on another replica;
4. exits 0.

The delay plus the grace must fit in the pod's `terminationGracePeriodSeconds` (default 30), or the kubelet kills the process first. In a cluster, a delay of a few seconds (e.g. `--shutdown-delay-seconds=5`) avoids the requests that would otherwise reach a pod that has stopped accepting before endpoints are updated."),
    ));

    sections.push(section(
        "logs",
        "Logs",
        md("One JSON object per line on standard error (`--log-format text` for people). `KLIO_API_LOG` sets the filter (default `info`). Worth knowing:

- `reading the Klio catalog failed` (warn): logged once per new error of a source, with server and tier;
- `catalog snapshot published` (info): the catalog changed, with its resourceVersion, the number of backups and of changes;
- `skipping a backup that cannot be read` (warn): once per Klio snapshot the service cannot read or map (with the manifest ID and the reason); the rest of the catalog is served;
- `the Klio server shows no backups to snapshot_reader@klio` (warn): once per empty spell, with the ACL step (see [No backups listed](troubleshooting.html#no-backups));
- `Kopia session open` (info): a session with a Klio server (re)started;
- `serving certificate reloaded` (info), and warnings when a renewed certificate is not usable yet;
- access logs (target `access`), including unauthenticated requests with the reason."),
    ));

    sections.push(section(
        "scaling",
        "Replicas, caching and consistency",
        md(&format!("Replicas share nothing: each reads the Klio servers itself over one long-lived Kopia session per source (an unchanged catalog costs four label-only listings per source and refresh; only new backups are read). Because `resourceVersion` is derived from the repositories' manifest times, replicas reading the same servers give the same versions, so a list continued or a watch resumed on another replica works as long as that replica still holds the revision (`--catalog-history`), and is otherwise answered `410 Expired`, as kube-apiserver does. Memory grows with the catalog (objects are shared between snapshots and the watch history keeps `--catalog-history` snapshots).{}", deploy.resources_text())),
    ));

    Ok(Page { file: "operations.html", title: "Operations", lead, sections })
}

/// The metrics, from the registry itself: one sample of every family (with empty label values)
/// is created so that the label names show in the exposition.
fn metric_rows() -> Result<Vec<Vec<String>>> {
    use crate::metrics::*;
    let m = metrics();
    let s = String::new;
    let _ = m.requests.get_or_create(&RequestLabels { verb: s(), group: s(), resource: s(), code: s() });
    let _ = m.request_duration.get_or_create(&DurationLabels { verb: s(), group: s(), resource: s() });
    let _ = m.inflight.get_or_create(&InflightLabels { request_kind: s() });
    let _ = m.fetches.get_or_create(&FetchLabels { server: s(), tier: s(), result: s() });
    let _ = m.fetch_duration.get_or_create(&SourceLabels { server: s(), tier: s() });
    let _ = m.last_success.get_or_create(&SourceLabels { server: s(), tier: s() });
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
        } else if !line.starts_with('#') {
            if let Some((sample, rest)) = line.split_once('{') {
                let family =
                    kind.iter().map(|(n, _)| n).filter(|n| sample.starts_with(n.as_str())).max_by_key(|n| n.len());
                if let Some(family) = family {
                    let labels = rest.split('}').next().unwrap_or_default();
                    for pair in labels.split(',') {
                        if let Some((k, _)) = pair.split_once('=') {
                            if k != "le" {
                                labels_of.entry(family.clone()).or_default().insert(k.to_string());
                            }
                        }
                    }
                }
            }
        }
    }
    if kind.is_empty() {
        bail!("the metrics registry rendered no metric");
    }
    Ok(kind
        .iter()
        .map(|(name, t)| {
            let shown = match t.as_str() {
                "counter" => format!("{name}_total"),
                _ => name.clone(),
            };
            let labels = labels_of
                .get(name)
                .map(|l| l.iter().map(|k| code(k)).collect::<Vec<_>>().join(", "))
                .unwrap_or_default();
            vec![
                code(&shown),
                esc(t),
                labels,
                esc(help.get(name).map(String::as_str).unwrap_or_default().trim_end_matches('.')),
            ]
        })
        .collect())
}

const STYLE: &str = r#"/* Klio API service documentation. Generated by `klio-api docs`; do not edit. */
:root {
  --fg: #1d2430;
  --muted: #5b6678;
  --bg: #ffffff;
  --panel: #f4f6f9;
  --line: #dde2ea;
  --accent: #0b62c4;
  --accent-dark: #0a3f7a;
  --code-bg: #0f1722;
  --code-fg: #e6edf3;
  --note: #fff7e0;
  --note-line: #e8c35a;
}
* { box-sizing: border-box; }
html { font-size: 16px; }
body {
  margin: 0;
  color: var(--fg);
  background: var(--bg);
  font-family: system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
  line-height: 1.55;
}
a { color: var(--accent); text-decoration: none; }
a:hover { text-decoration: underline; }
code, pre { font-family: ui-monospace, "SFMono-Regular", Menlo, Consolas, "DejaVu Sans Mono", monospace; font-size: 0.88em; }
p code, li code, td code { background: var(--panel); border: 1px solid var(--line); border-radius: 3px; padding: 0 0.25em; }
header.site {
  display: flex; flex-wrap: wrap; align-items: center; gap: 0.5rem 1.5rem;
  padding: 0.75rem 1.5rem; background: var(--accent-dark); color: #fff;
}
header.site .brand { color: #fff; font-weight: 700; font-size: 1.1rem; }
header.site nav { display: flex; flex-wrap: wrap; gap: 0.25rem 1rem; }
header.site nav a { color: #d6e6fb; padding: 0.15rem 0; border-bottom: 2px solid transparent; }
header.site nav a[aria-current="page"] { color: #fff; border-bottom-color: #fff; }
.layout { display: flex; align-items: flex-start; gap: 2rem; max-width: 84rem; margin: 0 auto; padding: 1.5rem; }
aside.toc {
  flex: 0 0 15rem; position: sticky; top: 1rem; max-height: calc(100vh - 2rem); overflow-y: auto;
  font-size: 0.9rem; border-right: 1px solid var(--line); padding-right: 1rem;
}
aside.toc p { margin: 0 0 0.5rem; font-weight: 600; color: var(--muted); text-transform: uppercase; font-size: 0.75rem; letter-spacing: 0.05em; }
aside.toc ul { list-style: none; margin: 0; padding: 0; }
aside.toc li { margin: 0.2rem 0; overflow-wrap: anywhere; }
main { flex: 1 1 auto; min-width: 0; }
h1 { font-size: 2rem; margin: 0 0 1rem; }
h2 { font-size: 1.4rem; margin: 2.2rem 0 0.8rem; padding-bottom: 0.3rem; border-bottom: 1px solid var(--line); }
h2 a.anchor, h2 a.anchor:hover { color: inherit; text-decoration: none; }
h3 { font-size: 1.1rem; margin: 1.6rem 0 0.6rem; }
section { scroll-margin-top: 1rem; }
.note { background: var(--note); border-left: 4px solid var(--note-line); padding: 0.1rem 1rem; margin: 1rem 0; border-radius: 3px; }
.code { margin: 0.8rem 0 1.2rem; border-radius: 6px; overflow: hidden; background: var(--code-bg); }
.code .label { background: #223047; color: #b8c7dc; font-size: 0.8rem; padding: 0.3rem 0.9rem; font-family: ui-monospace, Menlo, Consolas, monospace; }
.code pre { margin: 0; padding: 0.8rem 0.9rem; overflow-x: auto; color: var(--code-fg); line-height: 1.45; tab-size: 8; }
.code pre code { font-size: 0.82rem; }
.terminal .prompt { color: #7ee787; user-select: none; }
.terminal .stderr { color: #ffa198; }
.terminal .status { color: #8b97a8; }
.table { overflow-x: auto; margin: 0.8rem 0 1.2rem; }
table { border-collapse: collapse; width: 100%; font-size: 0.92rem; }
th, td { text-align: left; vertical-align: top; padding: 0.45rem 0.6rem; border-bottom: 1px solid var(--line); }
th { background: var(--panel); font-weight: 600; white-space: nowrap; }
table.facts { width: auto; }
table.facts td:first-child { font-weight: 600; white-space: nowrap; color: var(--muted); }
table.facts thead { display: none; }
table.fields td.field { white-space: nowrap; }
table.fields td.field a.anchor { color: var(--fg); }
table.fields td.field code { background: none; border: none; padding: 0; font-weight: 600; }
table.fields td.field .parent { color: var(--muted); font-weight: 400; }
table.fields td.d1 { padding-left: 1.6rem; }
table.fields td.d2 { padding-left: 2.6rem; }
table.fields td.d3 { padding-left: 3.6rem; }
table.fields td.d4 { padding-left: 4.6rem; }
td:last-child { overflow-wrap: anywhere; min-width: 14rem; }
table.fields td.type { white-space: nowrap; font-family: ui-monospace, Menlo, Consolas, monospace; font-size: 0.84rem; }
table.fields td.req { color: var(--muted); white-space: nowrap; }
table.fields td.req.yes { color: #a33a00; font-weight: 600; }
table.fields tr:target { background: #fff5c2; }
td:first-child { white-space: nowrap; }
table.flags .meta { color: var(--muted); font-size: 0.85rem; }
table.vars td:nth-child(2), table.vars td:nth-child(3) { white-space: nowrap; }
p.gvk { color: var(--muted); }
ul.pages li { margin: 0.3rem 0; }
.flow { display: flex; flex-wrap: wrap; align-items: center; gap: 0.6rem; margin: 1rem 0; }
.flow span { background: var(--panel); border: 1px solid var(--line); border-radius: 6px; padding: 0.5rem 0.8rem; font-weight: 600; text-align: center; }
.flow span small { display: block; font-weight: 400; color: var(--muted); font-size: 0.75rem; }
.flow span.arrow { background: none; border: none; color: var(--muted); padding: 0; font-size: 1.3rem; }
footer { border-top: 1px solid var(--line); color: var(--muted); font-size: 0.85rem; padding: 1rem 1.5rem 2rem; max-width: 84rem; margin: 2rem auto 0; }
@media (max-width: 60rem) {
  .layout { display: block; }
  aside.toc { position: static; max-height: none; border-right: none; border-bottom: 1px solid var(--line); padding: 0 0 1rem; margin-bottom: 1rem; }
}
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_and_inline_markup() {
        assert_eq!(esc("<a href=\"x\">&'"), "&lt;a href=&quot;x&quot;&gt;&amp;&#39;");
        assert_eq!(
            inline("use `a<b>` and [the ref](reference.html#KlioBackup), **not** <this>"),
            "use <code>a&lt;b&gt;</code> and <a href=\"reference.html#KlioBackup\">the ref</a>, <strong>not</strong> &lt;this&gt;"
        );
        assert_eq!(md("- one\n  more\n- two"), "<ul>\n<li>one more</li>\n<li>two</li>\n</ul>\n");
        assert_eq!(md("1. a\n2. b"), "<ol>\n<li>a</li>\n<li>b</li>\n</ol>\n");
    }

    #[test]
    fn shell_words_as_bash_splits_them() {
        let vars = BTreeMap::from([("NAME".to_string(), "a.b".to_string())]);
        assert_eq!(
            shell_words(r#"get-jsonpath 0 text x get kb "$NAME" -o 'jsonpath={.status.startWAL}' # note"#, &vars)
                .unwrap(),
            ["get-jsonpath", "0", "text", "x", "get", "kb", "a.b", "-o", "jsonpath={.status.startWAL}"]
        );
        assert!(shell_words("\"$MISSING\"", &vars).is_err());
        assert_eq!(shell_quote("jsonpath={.a}"), "'jsonpath={.a}'");
        assert_eq!(shell_quote("spec.clusterName=x"), "spec.clusterName=x");
    }
}
