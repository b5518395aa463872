//! The pages: each `docs/pages/<page>.md` is a minijinja template (for the facts it takes from
//! the code, the OpenAPI document, the conformance suite and the manifests), whose output is
//! Markdown, rendered by [`crate::markdown`] and laid out by `docs/theme/page.html`.
//!
//! Template functions that produce HTML (tables with anchors, terminals) hand back a placeholder
//! that the Markdown renderer replaces with the HTML; functions that produce values hand back
//! text. Tables whose rows are written in the pages (Secrets, labels, annotations) are checked
//! against the data: every Secret the Deployment mounts, and every label and annotation of an
//! example object the page shows, must be described.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::{anyhow, bail, Context, Result};
use minijinja::value::{Kwargs, Rest};
use minijinja::{context, Environment, ErrorKind, Value};
use serde::Serialize;
use serde_json::json;

use crate::markdown::{self, esc, md_escape};
use crate::openapi::{code, table, Api};
use crate::service::{self, Examples};
use crate::sources::{self, Deploy, KubectlCase};
use crate::Inputs;

/// The pages, in navigation order: the file stem (`docs/pages/<stem>.md` → `<stem>.html`) and
/// the navigation label.
pub const NAV: &[(&str, &str)] = &[
    ("index", "Overview"),
    ("install", "Installation"),
    ("configuration", "Configuration"),
    ("reference", "API reference"),
    ("examples", "Examples"),
    ("kubectl", "kubectl"),
    ("troubleshooting", "Troubleshooting"),
    ("operations", "Operations"),
];

/// What the template functions read, and what they record.
struct Facts {
    api: Api,
    deploy: Deploy,
    examples: Examples,
    cases: Vec<KubectlCase>,
    /// The HTML fragments of the page being rendered.
    fragments: Mutex<Vec<String>>,
    /// What the pages described, by kind (`secret`, `label`, `annotation`), and the example
    /// objects whose labels and annotations they showed.
    described: Mutex<BTreeMap<&'static str, BTreeSet<String>>>,
}

fn err(e: impl std::fmt::Display) -> minijinja::Error {
    minijinja::Error::new(ErrorKind::InvalidOperation, format!("{e:#}"))
}

impl Facts {
    fn fragment(&self, html: String) -> String {
        let mut fragments = self.fragments.lock().unwrap_or_else(|p| p.into_inner());
        fragments.push(html);
        markdown::placeholder(fragments.len() - 1)
    }

    fn describe(&self, kind: &'static str, key: &str) {
        self.described.lock().unwrap_or_else(|p| p.into_inner()).entry(kind).or_default().insert(key.to_string());
    }

    fn case(&self, id: &str) -> Result<&KubectlCase> {
        self.cases.iter().find(|c| c.id == id).ok_or_else(|| anyhow!("no kubectl case {id} in the cases file"))
    }

    /// A label or annotation of an example object, as text; recorded as described.
    fn example_value(&self, kind: &'static str, object: &str, key: &str) -> Result<String> {
        let o = self.examples.object(object)?;
        let map = if kind == "label" { &o["metadata"]["labels"] } else { &o["status"]["annotations"] };
        let value = map[key].as_str().ok_or_else(|| anyhow!("{object} has no {kind} {key}"))?;
        self.describe(kind, key);
        self.describe(if kind == "label" { "label-object" } else { "annotation-object" }, object);
        Ok(value.to_string())
    }

    /// What the pages should have described and did not.
    fn undescribed(&self) -> Result<Vec<String>> {
        let described = self.described.lock().unwrap_or_else(|p| p.into_inner());
        let get = |k: &str| described.get(k).cloned().unwrap_or_default();
        let mut missing = vec![];
        for (secret, _) in self.deploy.secrets() {
            if !get("secret").contains(&secret) {
                missing.push(format!("the Secret {secret} the Deployment mounts (secret_mount)"));
            }
        }
        for (kind, pointer) in [("label", "/metadata/labels"), ("annotation", "/status/annotations")] {
            for object in get(&format!("{kind}-object")) {
                let o = self.examples.object(&object)?;
                for key in o.pointer(pointer).and_then(|m| m.as_object()).into_iter().flatten().map(|(k, _)| k) {
                    if !get(kind).contains(key) {
                        missing.push(format!("the {kind} {key} of {object}"));
                    }
                }
            }
        }
        Ok(missing)
    }
}

/// The data the pages see as variables.
#[derive(Serialize)]
struct Vars {
    api: serde_json::Value,
    deploy: serde_json::Value,
    examples_server: String,
    kubectl_cases: Vec<KubectlCase>,
    types: Vec<serde_json::Value>,
    selectable_fields: &'static [&'static str],
}

fn vars(f: &Facts) -> Result<Vars> {
    let api = &f.api;
    let kind_key = api.kind_key(api.resource.kind)?;
    let d = &f.deploy;
    Ok(Vars {
        api: json!({
            "group": api.group,
            "version": api.version,
            "group_version": api.group_version(),
            "kind": api.resource.kind,
            "list_kind": api.resource.list_kind,
            "resource": api.resource.name,
            "description": api.doc()["info"]["description"],
            "kind_key": kind_key,
            "kind_description": api.description(&kind_key),
            "openapi_path": crate::openapi::OPENAPI_PATH,
        }),
        deploy: json!({
            "replicas": d.replicas(),
            "pdb_min_available": d.pdb_min_available(),
            "liveness_path": d.probe_path("livenessProbe"),
            "liveness_period": d.probe("livenessProbe", "periodSeconds"),
            "readiness_path": d.probe_path("readinessProbe"),
            "readiness_period": d.probe("readinessProbe", "periodSeconds"),
            "egress_ports": d.egress_ports(),
            "resources_text": d.resources_text(),
            "overlays": d.overlays,
        }),
        examples_server: f.examples.server.clone(),
        kubectl_cases: f.cases.iter().filter(|c| c.phase == "seq").cloned().collect(),
        types: api
            .ordered_schemas()
            .into_iter()
            .map(|k| json!({"key": k, "short": Api::short(k), "description": api.description(k)}))
            .collect(),
        selectable_fields: klio_api::api::selectors::SELECTABLE_FIELDS,
    })
}

/// The template environment: the pages, the layout, and the functions the pages call.
fn environment(root: &Path, facts: &Arc<Facts>) -> Result<Environment<'static>> {
    let mut env = Environment::new();
    // `{#id}` is Markdown's heading anchor, so template comments are `{##` … `##}`.
    env.set_syntax(
        minijinja::syntax::SyntaxConfig::builder()
            .comment_delimiters("{##", "##}")
            .trim_blocks(true)
            .lstrip_blocks(true)
            .keep_trailing_newline(true)
            .build()?,
    );
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
    for dir in ["pages", "theme"] {
        for entry in std::fs::read_dir(root.join(dir)).with_context(|| format!("reading docs/{dir}"))? {
            let path = entry?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
            if name.ends_with(".md") || name.ends_with(".html") || name.ends_with(".yaml") {
                let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
                env.add_template_owned(name, text)?;
            }
        }
    }
    env.add_filter("md_escape", |s: &str| md_escape(s));

    macro_rules! function {
        ($name:literal, |$f:ident $(, $arg:ident: $ty:ty)*| $body:expr) => {{
            let $f = facts.clone();
            env.add_function($name, move |$($arg: $ty),*| -> Result<String, minijinja::Error> {
                let $f = &*$f;
                let body = || -> Result<String> { Ok($body) };
                body().map_err(err)
            });
        }};
    }
    // HTML fragments.
    function!("facts", |f| f.fragment(f.api.facts()));
    function!("endpoints", |f| f.fragment(f.api.endpoints()));
    function!("error_responses", |f| f.fragment(f.api.error_responses()));
    function!("type_body", |f, key: String| f.fragment(f.api.gvk(&key) + &f.api.type_body(&key)?));
    function!("columns_table", |f| f.fragment(columns_table()));
    function!("metrics_table", |f| f.fragment(service::metrics_table()?));
    function!("manifests_table", |f| f.fragment(manifests_table(&f.deploy)));
    function!("client_base_vars", |f| f.fragment(client_base_vars(&f.deploy)?));
    function!("terminal", |f, id: String| f.fragment(sources::terminal(f.case(&id)?)));
    {
        let f = facts.clone();
        env.add_function("flags_table", move |path: String, prefix: String, kwargs: Kwargs| {
            let globals: Option<bool> = kwargs.get("globals")?;
            kwargs.assert_all_used()?;
            let cmd = service::command(&path).map_err(err)?;
            Ok::<_, minijinja::Error>(f.fragment(service::flags_table(&cmd, &prefix, globals.unwrap_or(false))))
        });
    }
    // Text.
    function!("about", |_f, path: String| service::about(&service::command(&path)?));
    function!("help_text", |_f, path: String| service::help_text(&service::command(&path)?));
    function!("default_of", |_f, path: String, id: String| service::default_of(&service::command(&path)?, &id)?);
    function!("example_json", |f, name: String| serde_json::to_string_pretty(f.examples.object(&name)?)?);
    function!("example_list_json", |f, selector: String| {
        let list = json!({
            "apiVersion": f.api.group_version(),
            "kind": f.api.resource.list_kind,
            "metadata": {},
            "items": f.examples.selected(&selector)?,
        });
        serde_json::to_string_pretty(&list)?
    });
    function!("record_json", |f, cluster: String, id: String| serde_json::to_string_pretty(
        f.examples.record(&cluster, &id)?
    )?);
    function!("label_example", |f, object: String, key: String| f.example_value("label", &object, &key)?);
    function!("annotation_example", |f, object: String, key: String| f.example_value("annotation", &object, &key)?);
    function!("secret_mount", |f, name: String| {
        let (_, mount) = f
            .deploy
            .secrets()
            .into_iter()
            .find(|(s, _)| *s == name)
            .ok_or_else(|| anyhow!("the Deployment mounts no Secret {name}"))?;
        f.describe("secret", &name);
        mount
    });
    function!("forbidden_message", |f, user: String| service::forbidden_message(
        &user,
        "GET",
        &format!("/apis/{}/{}", f.api.group_version(), f.api.resource.name)
    ));
    {
        let f = facts.clone();
        // The keys of a dictionary written in a page, each a kubectl case's id (catches typos).
        env.add_function("check_case_ids", move |keys: Rest<Value>| {
            for map in keys.iter() {
                for key in map.try_iter()? {
                    let key = key.as_str().unwrap_or_default().to_string();
                    f.case(&key).map_err(err)?;
                }
            }
            Ok::<_, minijinja::Error>(String::new())
        });
    }
    Ok(env)
}

fn columns_table() -> String {
    let rows: Vec<Vec<String>> = klio_api::api::table::COLUMNS
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
    table("columns", &["Column", "Type", "Shown", "Description"], &rows)
}

fn manifests_table(deploy: &Deploy) -> String {
    let rows: Vec<Vec<String>> = deploy
        .base
        .iter()
        .map(|m| {
            let namespace = if m.namespace.is_empty() { "<em>cluster</em>".into() } else { code(&m.namespace) };
            vec![esc(&m.kind), code(&m.name), namespace, code(&m.file)]
        })
        .collect();
    table("manifests", &["Kind", "Name", "Namespace", "File"], &rows)
}

/// The `CLIENT_BASE_*` variables: their value in the base Deployment, their flag, their meaning.
fn client_base_vars(deploy: &Deploy) -> Result<String> {
    let cmd = service::command("server api-server")?;
    let rows: Vec<Vec<String>> = service::flags(&cmd, false)
        .into_iter()
        .filter(|f| f.env.as_deref().is_some_and(|e| e.starts_with("CLIENT_BASE_")))
        .map(|f| {
            let env = f.env.unwrap_or_default();
            let set = deploy.env(&env).map(|v| code(&v)).unwrap_or_else(|| "<em>not set</em>".into());
            let id = service::flag_id("api-server", &f.flag);
            let link = format!("<a href=\"configuration.html#{}\">{}</a>", esc(&id), code(&f.flag));
            vec![code(&env), set, link, markdown::inline(&f.help)]
        })
        .collect();
    Ok(table("vars", &["Variable", "Base Deployment", "Flag", "Meaning"], &rows))
}

/// The site: file name → content.
pub fn generate(inputs: &Inputs) -> Result<BTreeMap<String, String>> {
    let facts = Arc::new(Facts {
        api: Api::load(&inputs.root)?,
        deploy: Deploy::load(&inputs.root.join("deploy"))?,
        examples: Examples::build()?,
        cases: sources::kubectl_cases(&inputs.root.join("conformance"))?,
        fragments: Mutex::new(vec![]),
        described: Mutex::new(BTreeMap::new()),
    });
    let docs = inputs.root.join("docs");
    let env = environment(&docs, &facts)?;
    let vars = Value::from(minijinja::value::Serde(vars(&facts)?));
    let version = service::version();
    let mut site = BTreeMap::new();
    for (stem, _) in NAV {
        let source = format!("{stem}.md");
        let markdown = env
            .get_template(&source)
            .and_then(|t| t.render(&vars))
            .map_err(|e| anyhow!("docs/pages/{source}: {e:#}"))?;
        let fragments = std::mem::take(&mut *facts.fragments.lock().unwrap_or_else(|p| p.into_inner()));
        let parts = markdown::render(&markdown, &fragments).with_context(|| format!("docs/pages/{source}"))?;
        let page = layout(&env, stem, &parts, &version).with_context(|| format!("laying out {stem}.html"))?;
        site.insert(format!("{stem}.html"), page);
    }
    let missing = facts.undescribed()?;
    if !missing.is_empty() {
        bail!("the pages do not describe:\n  {}", missing.join("\n  "));
    }
    let style = docs.join("theme/style.css");
    site.insert(
        "style.css".to_string(),
        std::fs::read_to_string(&style).with_context(|| format!("reading {}", style.display()))?,
    );
    Ok(site)
}

fn layout(env: &Environment, stem: &str, parts: &markdown::Parts, version: &str) -> Result<String> {
    let nav: Vec<_> = NAV
        .iter()
        .map(|(s, label)| context! { file => format!("{s}.html"), label => *label, current => *s == stem })
        .collect();
    let sections: Vec<_> = parts
        .sections
        .iter()
        .map(|s| {
            context! {
                id => s.id.clone(),
                title => Value::from_safe_string(esc(&s.title)),
                title_html => Value::from_safe_string(s.title_html.clone()),
                html => Value::from_safe_string(s.html.clone()),
            }
        })
        .collect();
    let page = env.get_template("page.html")?.render(context! {
        title => Value::from_safe_string(esc(&parts.title)),
        lead => Value::from_safe_string(parts.lead.clone()),
        sections,
        nav,
        version,
        generator => crate::GENERATOR,
        regenerate => Value::from_safe_string(esc(crate::REGENERATE)),
        openapi_path => Value::from_safe_string(esc(crate::openapi::OPENAPI_PATH)),
    })?;
    Ok(page)
}
