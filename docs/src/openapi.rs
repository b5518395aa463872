//! What the site shows from the OpenAPI document (`openapi/…json`, the API's single source of
//! truth): every field of every type (kubectl-explain style, flattened with their parents), the
//! endpoints with their parameters and responses, the resource's discovery facts.

use std::fmt::Write as _;

use anyhow::{anyhow, Context, Result};
use serde_json::{Map, Value};

use crate::markdown::esc;

/// The document's path in the repository.
pub const OPENAPI_PATH: &str = "openapi/kliocatalog.enterprisedb.io_v1alpha1.json";

/// The OpenAPI document and the resource it defines.
pub struct Api {
    doc: Value,
    /// The API group (`x-klio-discovery.group`).
    pub group: String,
    /// The version (`x-klio-discovery.version`).
    pub version: String,
    /// The resource, as discovery shows it.
    pub resource: &'static klio_api::api::discovery::Resource,
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

/// `<code>text</code>`.
pub fn code(text: &str) -> String {
    format!("<code>{}</code>", esc(text))
}

/// A table of cells that are HTML already.
pub fn table(class: &str, head: &[&str], rows: &[Vec<String>]) -> String {
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

impl Api {
    /// Reads the document from the source tree.
    pub fn load(root: &std::path::Path) -> Result<Self> {
        let path = root.join(OPENAPI_PATH);
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        let doc: Value = serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        doc["components"]["schemas"].as_object().ok_or_else(|| anyhow!("no components.schemas"))?;
        let discovery = &doc["x-klio-discovery"];
        let group = discovery["group"].as_str().ok_or_else(|| anyhow!("no x-klio-discovery.group"))?.to_string();
        let version = discovery["version"].as_str().ok_or_else(|| anyhow!("no x-klio-discovery.version"))?.to_string();
        let resource =
            klio_api::routes::RESOURCES.first().ok_or_else(|| anyhow!("the document defines no resource"))?;
        Ok(Self { doc, group, version, resource })
    }

    /// The document itself.
    pub fn doc(&self) -> &Value {
        &self.doc
    }

    fn schemas(&self) -> &Map<String, Value> {
        self.doc["components"]["schemas"].as_object().expect("checked in load")
    }

    /// `group/version`.
    pub fn group_version(&self) -> String {
        format!("{}/{}", self.group, self.version)
    }

    /// `#/components/schemas/io.x.v1.Kind` → the schema key.
    fn ref_key(reference: &str) -> Option<&str> {
        reference.strip_prefix("#/components/schemas/")
    }

    /// The type's display name (its last segment), which is also its anchor on the reference page.
    pub fn short(key: &str) -> &str {
        key.rsplit('.').next().unwrap_or(key)
    }

    /// The schema a property refers to, directly or through `allOf`.
    fn target(prop: &Value) -> Option<&str> {
        prop["$ref"].as_str().or_else(|| prop["allOf"][0]["$ref"].as_str()).and_then(Self::ref_key)
    }

    fn is_kind(schema: &Value) -> bool {
        schema.get("x-kubernetes-group-version-kind").is_some()
    }

    /// A link to a type on the reference page.
    pub fn type_link(key: &str) -> String {
        let short = Self::short(key);
        format!("<a href=\"reference.html#{}\">{}</a>", esc(short), esc(short))
    }

    /// The type of a property, as HTML, kubectl-explain style.
    fn type_html(&self, prop: &Value) -> String {
        if let Some(key) = Self::target(prop) {
            let schema = &self.schemas()[key];
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
    pub fn scalar(schema: &Value) -> String {
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
        let schema = &self.schemas()[key];
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
                let t = &self.schemas()[target];
                if t["properties"].is_object() && !Self::is_kind(t) && !visiting.iter().any(|v| v == target) {
                    visiting.push(target.to_string());
                    self.walk(target, &format!("{path}{suffix}"), depth + 1, rows, visiting);
                    visiting.pop();
                }
            }
        }
    }

    /// A type's fields as a table (each row its own anchor, `Kind.path.to.field`), or its scalar
    /// type when it has no properties.
    pub fn type_body(&self, key: &str) -> Result<String> {
        let schema = self.schemas().get(key).ok_or_else(|| anyhow!("no schema {key}"))?;
        if !schema["properties"].is_object() {
            return Ok(format!("<p>Type: {}.</p>\n", esc(&Self::scalar(schema))));
        }
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
        Ok(out)
    }

    /// `apiVersion: …, kind: …` of a type that is a kind; empty otherwise.
    pub fn gvk(&self, key: &str) -> String {
        let gvk: Vec<String> = self.schemas()[key]["x-kubernetes-group-version-kind"]
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
        if gvk.is_empty() {
            String::new()
        } else {
            format!("<p class=\"gvk\">{}</p>\n", gvk.join("; "))
        }
    }

    /// The schemas in reading order: this group's kinds, this group's other types, the rest.
    pub fn ordered_schemas(&self) -> Vec<&str> {
        let ours = |k: &str| {
            self.schemas()[k]["x-kubernetes-group-version-kind"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|g| g["group"].as_str() == Some(self.group.as_str()))
        };
        let mut keys: Vec<&str> = self.schemas().keys().map(String::as_str).collect();
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

    /// A schema's description.
    pub fn description(&self, key: &str) -> String {
        self.schemas().get(key).and_then(|s| s["description"].as_str()).unwrap_or_default().to_string()
    }

    /// The schema key of one of this group's kinds.
    pub fn kind_key(&self, kind: &str) -> Result<String> {
        self.schemas()
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
    pub fn facts(&self) -> String {
        let r = self.resource;
        let list = |items: &[&str]| items.iter().map(|s| code(s)).collect::<Vec<_>>().join(", ");
        let rows = vec![
            vec!["API group".into(), code(&self.group)],
            vec!["Version".into(), code(&self.version)],
            vec!["Kind".into(), format!("<a href=\"reference.html#{0}\">{0}</a>", esc(r.kind))],
            vec!["List kind".into(), format!("<a href=\"reference.html#{0}\">{0}</a>", esc(r.list_kind))],
            vec!["Resource (plural)".into(), code(r.name)],
            vec!["Singular".into(), code(r.singular_name)],
            vec!["Short names".into(), list(r.short_names)],
            vec!["Categories".into(), list(r.categories)],
            vec!["Scope".into(), if r.namespaced { "Namespaced".into() } else { "Cluster".into() }],
            vec!["Verbs".into(), list(r.verbs)],
        ];
        table("facts", &["", ""], &rows)
    }

    /// A parameter, `$ref`s resolved.
    fn parameter<'a>(&'a self, p: &'a Value) -> &'a Value {
        match p["$ref"].as_str().and_then(|r| r.strip_prefix("#/components/parameters/")) {
            Some(name) => &self.doc["components"]["parameters"][name],
            None => p,
        }
    }

    fn response<'a>(&'a self, r: &'a Value) -> &'a Value {
        match r["$ref"].as_str().and_then(|r| r.strip_prefix("#/components/responses/")) {
            Some(name) => &self.doc["components"]["responses"][name],
            None => r,
        }
    }

    /// Every operation: a heading, what it does, its parameters and its responses.
    pub fn endpoints(&self) -> String {
        let mut ep = String::new();
        for (path, item) in self.doc["paths"].as_object().into_iter().flatten() {
            for (method, op) in item.as_object().into_iter().flatten() {
                if op.get("x-kubernetes-action").is_none() {
                    continue;
                }
                let _ = writeln!(
                    ep,
                    "<h3 id=\"{}\">{} {}</h3>",
                    esc(op["operationId"].as_str().unwrap_or_default()),
                    esc(&method.to_uppercase()),
                    code(path)
                );
                let watch =
                    op["parameters"].as_array().into_iter().flatten().any(|p| self.parameter(p)["name"] == "watch");
                let _ = writeln!(
                    ep,
                    "<p>{} (Kubernetes verb <code>{}</code>{}).</p>",
                    esc(&capitalize(op["description"].as_str().unwrap_or_default())),
                    esc(op["x-kubernetes-action"].as_str().unwrap_or_default()),
                    if watch { ", and <code>watch</code> with <code>?watch=true</code>" } else { "" }
                );
                let rows: Vec<Vec<String>> = item["parameters"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .chain(op["parameters"].as_array().into_iter().flatten())
                    .map(|p| {
                        let p = self.parameter(p);
                        vec![
                            code(p["name"].as_str().unwrap_or_default()),
                            esc(p["in"].as_str().unwrap_or_default()),
                            esc(&Self::scalar(&p["schema"])),
                            esc(p["description"].as_str().unwrap_or_default()),
                        ]
                    })
                    .collect();
                ep.push_str(&table("params", &["Parameter", "In", "Type", "Description"], &rows));
                let rows: Vec<Vec<String>> = op["responses"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(status, r)| {
                        let r = self.response(r);
                        let schema =
                            r["content"]["application/json"]["schema"]["$ref"].as_str().and_then(Self::ref_key);
                        vec![
                            code(status),
                            esc(r["description"].as_str().unwrap_or_default()),
                            schema.map(Self::type_link).unwrap_or_default(),
                        ]
                    })
                    .collect();
                ep.push_str(&table("responses", &["Status", "Meaning", "Body"], &rows));
            }
        }
        ep
    }

    /// The document's shared error responses.
    pub fn error_responses(&self) -> String {
        let rows: Vec<Vec<String>> = self.doc["components"]["responses"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(name, r)| vec![code(name), esc(r["description"].as_str().unwrap_or_default())])
            .collect();
        table("errors", &["Response", "When"], &rows)
    }
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}
