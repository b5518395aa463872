//! The documentation site: the committed `docs/site` is exactly what `klio-docs` writes now
//! (regenerated into a temporary directory by the real binary), the HTML is well formed, every
//! internal link and anchor resolves, nothing is loaded from elsewhere, the pages show what the
//! service is, and the pages follow their data (the cases file, the manifests).
//! (The real-browser check is `conformance/docs-browser.sh`.)

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

fn repo() -> PathBuf {
    klio_docs::Inputs::from_source_tree().root
}

/// Every file under `dir`, by relative path.
fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let rel = path.strip_prefix(dir).unwrap().to_string_lossy().replace('\\', "/");
                out.insert(rel, std::fs::read(&path).unwrap());
            }
        }
    }
    out
}

fn first_difference(a: &str, b: &str) -> String {
    for (i, (x, y)) in a.lines().zip(b.lines()).enumerate() {
        if x != y {
            return format!("line {}:\n  committed: {x}\n  generated: {y}", i + 1);
        }
    }
    format!("lengths differ: {} vs {} lines", a.lines().count(), b.lines().count())
}

fn klio_docs(out: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_klio-docs"));
    cmd.arg("--out").arg(out);
    cmd
}

#[test]
fn the_committed_site_is_current() {
    let tmp = tempfile::tempdir().unwrap();
    let out = klio_docs(tmp.path()).output().expect("running klio-docs");
    assert!(
        out.status.success(),
        "klio-docs failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let generated = files(tmp.path());
    assert!(generated.contains_key("index.html") && generated.contains_key("style.css"), "{:?}", generated.keys());
    let committed = files(&repo().join("docs/site"));
    let mut problems = vec![];
    for (name, content) in &generated {
        match committed.get(name) {
            None => problems.push(format!("docs/site/{name} is missing")),
            Some(c) if c != content => problems.push(format!(
                "docs/site/{name} is out of date, {}",
                first_difference(&String::from_utf8_lossy(c), &String::from_utf8_lossy(content))
            )),
            Some(_) => {}
        }
    }
    for name in committed.keys().filter(|n| !generated.contains_key(*n)) {
        problems.push(format!("docs/site/{name} is not generated any more"));
    }
    assert!(
        problems.is_empty(),
        "docs/site is not current: regenerate with `{}` and commit the result.\n{}",
        klio_docs::REGENERATE,
        problems.join("\n")
    );

    // Deterministic: a second run writes the same bytes (and changes no file).
    let again = klio_docs(tmp.path()).output().unwrap();
    assert!(again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stdout).contains(", 0 changed,"),
        "{}",
        String::from_utf8_lossy(&again.stdout)
    );
    assert_eq!(files(tmp.path()), generated);
}

/// The site as the library generates it (the binary writes the same, see above).
fn site() -> &'static BTreeMap<String, String> {
    static SITE: OnceLock<BTreeMap<String, String>> = OnceLock::new();
    SITE.get_or_init(|| klio_docs::generate(&klio_docs::Inputs::from_source_tree()).expect("generating the site"))
}

const VOID: &[&str] = &["meta", "link", "br", "hr", "img", "input", "wbr"];

/// The tags of a page: (name, attributes text, closing?). Text is escaped by the generator, so
/// every `<` starts a tag.
fn tags(html: &str) -> Vec<(String, String, bool)> {
    let mut out = vec![];
    let mut rest = html;
    while let Some(start) = rest.find('<') {
        let end = rest[start..].find('>').map(|e| start + e).expect("an unclosed tag");
        let inner = &rest[start + 1..end];
        rest = &rest[end + 1..];
        if inner.starts_with('!') {
            continue;
        }
        let closing = inner.starts_with('/');
        let inner = inner.trim_start_matches('/');
        let name: String = inner.chars().take_while(|c| c.is_ascii_alphanumeric()).collect();
        out.push((name.to_ascii_lowercase(), inner[name.len()..].to_string(), closing));
    }
    out
}

/// The values of `attr="..."` in a tag's attribute text.
fn attr(attrs: &str, name: &str) -> Option<String> {
    let key = format!(" {name}=\"");
    let start = attrs.find(&key)? + key.len();
    let end = attrs[start..].find('"')? + start;
    Some(attrs[start..end].replace("&amp;", "&").replace("&quot;", "\"").replace("&#39;", "'"))
}

/// The HTML elements the site is made of (a tag outside this list is text that was taken for
/// HTML, such as `<hostname>` in prose).
const ELEMENTS: &[&str] = &[
    "html", "head", "meta", "title", "link", "body", "header", "nav", "a", "div", "aside", "p", "ul", "ol", "li",
    "main", "h1", "h2", "h3", "section", "table", "thead", "tbody", "tr", "th", "td", "code", "pre", "span", "strong",
    "em", "small", "br", "footer",
];

#[test]
fn pages_are_well_formed_and_self_contained() {
    for (name, html) in site().iter().filter(|(n, _)| n.ends_with(".html")) {
        assert!(html.starts_with("<!DOCTYPE html>\n<html lang=\"en\">"), "{name}");
        let mut stack: Vec<String> = vec![];
        for (tag, attrs, closing) in tags(html) {
            assert!(ELEMENTS.contains(&tag.as_str()), "{name}: <{tag}{attrs}> is not an element the site uses");
            for key in ["src", "href"] {
                if let Some(v) = attr(&attrs, key) {
                    let external = v.contains("://") || v.starts_with("//");
                    let icon = tag == "link" && attrs.contains("rel=\"icon\"") && v == "data:,";
                    assert!(!external, "{name}: <{tag} {key}={v:?}> points outside the site");
                    assert!(!v.starts_with("data:") || icon, "{name}: <{tag} {key}={v:?}>");
                }
            }
            if VOID.contains(&tag.as_str()) {
                continue;
            }
            if closing {
                let open = stack.pop();
                assert_eq!(open.as_deref(), Some(tag.as_str()), "{name}: </{tag}> closes {open:?}");
            } else {
                stack.push(tag);
            }
        }
        assert!(stack.is_empty(), "{name}: unclosed {stack:?}");
        assert!(!html.contains("klio-docs fragment"), "{name}: a fragment placeholder was left");
    }
}

#[test]
fn every_link_and_anchor_resolves() {
    let site = site();
    let mut ids: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for (name, html) in site {
        let mut set = BTreeSet::new();
        for (_, attrs, closing) in tags(html) {
            if let (Some(id), false) = (attr(&attrs, "id"), closing) {
                assert!(set.insert(id.clone()), "{name}: duplicate id {id:?}");
            }
        }
        ids.insert(name, set);
    }
    let mut checked = 0;
    let mut linked: BTreeSet<String> = BTreeSet::new();
    for (name, html) in site.iter().filter(|(n, _)| n.ends_with(".html")) {
        for (tag, attrs, _) in tags(html) {
            let Some(href) = attr(&attrs, "href").or_else(|| attr(&attrs, "src")) else { continue };
            if href.starts_with("data:") {
                continue;
            }
            let (file, anchor) = href.split_once('#').unwrap_or((&href, ""));
            let file = if file.is_empty() { name.as_str() } else { file };
            assert!(site.contains_key(file), "{name}: <{tag}> links to {href:?}: no such file in the site");
            if !anchor.is_empty() {
                assert!(ids[file].contains(anchor), "{name}: <{tag}> links to {href:?}: {file} has no id {anchor:?}");
            }
            linked.insert(file.to_string());
            checked += 1;
        }
    }
    assert!(checked > 100, "only {checked} links");
    let pages: BTreeSet<String> = site.keys().cloned().collect();
    assert_eq!(linked, pages, "every file is linked from somewhere");
}

fn text_of(html: &str) -> String {
    let mut out = String::new();
    let mut rest = html;
    while let Some(start) = rest.find('<') {
        out.push_str(&rest[..start]);
        rest = &rest[rest[start..].find('>').map(|e| start + e + 1).unwrap()..];
    }
    out.push_str(rest);
    out.replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", "\"").replace("&#39;", "'").replace("&amp;", "&")
}

#[test]
fn the_reference_has_every_field_of_the_openapi_document() {
    let reference = &site()["reference.html"];
    let text = text_of(reference);
    let document = std::fs::read_to_string(repo().join(klio_docs::openapi::OPENAPI_PATH)).unwrap();
    let doc: serde_json::Value = serde_json::from_str(&document).unwrap();
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    for (key, schema) in schemas {
        let short = key.rsplit('.').next().unwrap();
        assert!(reference.contains(&format!("<section id=\"{short}\">")), "no section for {short}");
        for (field, prop) in schema["properties"].as_object().into_iter().flatten() {
            assert!(reference.contains(&format!("id=\"{short}.{field}\"")), "{short}.{field} is not listed");
            let description = prop["description"].as_str().expect("every field has a description");
            assert!(text.contains(description), "{short}.{field}: description missing");
        }
    }
    // Recursively: the deepest fields of KlioBackup are on its table.
    for id in ["KlioBackup.status.tablespaces.name", "KlioBackup.metadata.labels", "KlioBackup.spec.backupID"] {
        assert!(reference.contains(&format!("id=\"{id}\"")), "{id}");
    }
    for label in ["kliocatalog.enterprisedb.io/cluster", "kliocatalog.enterprisedb.io/tier2", "klio.io/tier1"] {
        assert!(text.contains(label), "{label}");
    }
    for column in klio_api::api::table::COLUMNS {
        assert!(text.contains(&column.name.to_uppercase()), "column {}", column.name);
    }
    for field in klio_api::api::selectors::SELECTABLE_FIELDS {
        assert!(reference.contains(&format!("<li><code>{field}</code></li>")), "field selector {field}");
    }
}

#[test]
fn the_kubectl_page_shows_the_recorded_outputs() {
    let page = &site()["kubectl.html"];
    let text = text_of(page);
    let conformance = repo().join("conformance");
    let cases = klio_docs::sources::kubectl_cases(&conformance).unwrap();
    // Every one-shot command (phase `seq`), in the order of the cases file, with its outputs; the
    // watches run around a catalog change and are not commands a reader can replay.
    let shown: Vec<_> = cases.iter().filter(|c| c.phase == "seq").collect();
    assert!(shown.len() > 10, "{} cases", shown.len());
    let mut at = 0;
    for case in &shown {
        let section = format!("<section id=\"{}\">", case.id);
        at += page[at..].find(&section).unwrap_or_else(|| panic!("no section {section} after byte {at}"));
        for output in [&case.stdout, &case.stderr] {
            assert!(text.contains(output.trim_end()), "kubectl.html does not show the output of {}", case.id);
        }
    }
    for case in cases.iter().filter(|c| c.phase != "seq") {
        assert!(!page.contains(&format!("<section id=\"{}\">", case.id)), "{} is shown", case.id);
    }
    // The golden files themselves, as the suite names them.
    let golden = files(&conformance.join("expected"));
    let wide = String::from_utf8(golden["get-wide.out"].clone()).unwrap();
    assert!(text.contains(wide.trim_end()));
    assert!(text.contains("$ kubectl get kliobackups -o wide"));
    assert!(text
        .contains("$ kubectl get kliobackup cluster-example.backup-20251113093137 -o 'jsonpath={.status.startWAL}'"));
    assert!(
        text.contains("$ kubectl get kliobackups -l 'kliocatalog.enterprisedb.io/cluster in (pg-orders,pg-analytics)'")
    );
}

#[test]
fn examples_guides_and_operations_say_what_they_should() {
    let site = site();
    let examples = text_of(&site["examples.html"]);
    assert!(examples.contains("\"name\": \"cluster-example.backup-20251113093137\""));
    assert!(examples.contains("\"klio.io/kopiaManifestID\": \"2272afec220f48d0fa0064f85b043ac4\""));
    assert!(examples.contains("\"kliocatalog.enterprisedb.io/tier2\": \"true\""));
    assert!(examples.contains("\"kind\": \"KlioBackupList\""));

    let troubleshooting = &site["troubleshooting.html"];
    for id in
        ["certificates", "apiservice-not-available", "unauthorized-forbidden", "klio-unreachable", "namespace-deletion"]
    {
        assert!(troubleshooting.contains(&format!("<section id=\"{id}\">")), "troubleshooting: {id}");
    }
    assert!(text_of(troubleshooting).contains("NamespaceDeletionDiscoveryFailure"));
    assert!(text_of(troubleshooting).contains("2 replicas"));
    assert!(text_of(troubleshooting).contains("-o jsonpath='{.spec.caBundle}'"));

    let install = text_of(&site["install.html"]);
    for needle in [
        "kubectl apply -k deploy/overlays/cert-manager",
        "deploy/overlays/static-ca",
        "CLIENT_BASE_URL",
        "klio-client-tls",
        "newName: REGISTRY/klio-api",
    ] {
        assert!(install.contains(needle), "install: {needle}");
    }

    let configuration = text_of(&site["configuration.html"]);
    assert!(configuration.contains("Usage: klio-api server api-server [OPTIONS]"));
    for env in ["CLIENT_BASE_SERVER_CERT_PATH", "KLIO_API_SHUTDOWN_DELAY_SECONDS", "KLIO_API_LOG_FORMAT"] {
        assert!(configuration.contains(env), "configuration: {env}");
    }
    assert!(configuration.contains("its CN must be snapshot_reader@<hostname>"), "flag help is text, not HTML");

    let operations = text_of(&site["operations.html"]);
    let metrics = klio_api::metrics::metrics().render();
    for line in metrics.lines().filter_map(|l| l.strip_prefix("# TYPE ")) {
        let name = line.split(' ').next().unwrap();
        assert!(operations.contains(name), "operations: metric {name}");
    }
    for needle in ["/readyz", "/livez", "--shutdown-delay-seconds", "klio_catalog_read_errors_total"] {
        assert!(operations.contains(needle), "operations: {needle}");
    }
    for (name, html) in site.iter().filter(|(n, _)| n.ends_with(".html")) {
        assert!(html.contains(klio_docs::REGENERATE), "{name}: the footer says how to regenerate");
    }
}

#[test]
fn the_site_does_not_depend_on_the_environment() {
    // clap would print the current value of an environment variable in the help text.
    let tmp = tempfile::tempdir().unwrap();
    let b = klio_docs(tmp.path())
        .env("CLIENT_BASE_URL", "https://elsewhere:1")
        .env("KLIO_API_LOG_FORMAT", "text")
        .env("CLIENT_BASE_HOSTNAME", "other")
        .output()
        .unwrap();
    assert!(b.status.success(), "{}", String::from_utf8_lossy(&b.stderr));
    let generated = files(tmp.path());
    for (name, content) in &generated {
        let text = String::from_utf8_lossy(content);
        assert!(!text.contains("elsewhere"), "{name} shows the environment");
        assert!(!text.contains(repo().to_str().unwrap()), "{name} shows an absolute path");
    }
    assert_eq!(generated.get("configuration.html").map(Vec::as_slice), Some(site()["configuration.html"].as_bytes()));
}

/// A copy of what the generator reads, to change.
fn copy_of_the_inputs() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    let root = repo();
    for dir in [
        "openapi",
        "conformance/expected",
        "deploy/base",
        "deploy/overlays/cert-manager",
        "deploy/overlays/static-ca",
        "docs/pages",
        "docs/theme",
    ] {
        std::fs::create_dir_all(tmp.path().join(dir)).unwrap();
        for (name, content) in files(&root.join(dir)) {
            let path = tmp.path().join(dir).join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, content).unwrap();
        }
    }
    std::fs::copy(root.join("conformance/kubectl-cases.tsv"), tmp.path().join("conformance/kubectl-cases.tsv"))
        .unwrap();
    tmp
}

#[test]
fn the_pages_follow_their_data() {
    // A case added to the cases file is a section of the kubectl page, with its golden output.
    let tmp = copy_of_the_inputs();
    let root = tmp.path();
    let cases = root.join("conformance/kubectl-cases.tsv");
    let mut text = std::fs::read_to_string(&cases).unwrap();
    text.push_str("get-as-name\tseq\t0\ttext\tget-as-name\t-\tget\tkliobackups\t-o\tname\n");
    std::fs::write(&cases, text).unwrap();
    std::fs::write(root.join("conformance/expected/get-as-name.out"), "kliobackup.x/first\n").unwrap();
    let site = klio_docs::generate(&klio_docs::Inputs { root: root.to_path_buf() }).unwrap();
    let page = &site["kubectl.html"];
    assert!(page.contains("<section id=\"get-as-name\">"));
    assert!(page.contains("<li><a href=\"#get-as-name\">kubectl get kliobackups -o name</a></li>"));
    assert!(text_of(page).contains("$ kubectl get kliobackups -o name\nkliobackup.x/first"));

    // A note about a case that does not exist is refused (a typo in the page).
    let kubectl_md = root.join("docs/pages/kubectl.md");
    let page = std::fs::read_to_string(&kubectl_md).unwrap();
    std::fs::write(&kubectl_md, page.replace("\"get-shortname\":", "\"get-short-name\":")).unwrap();
    let err = klio_docs::generate(&klio_docs::Inputs { root: root.to_path_buf() }).unwrap_err();
    assert!(format!("{err:#}").contains("get-short-name"), "{err:#}");
    std::fs::write(&kubectl_md, page).unwrap();

    // A Secret the Deployment mounts and the installation guide does not describe is refused.
    let deployment = root.join("deploy/base/deployment.yaml");
    let yaml = std::fs::read_to_string(&deployment).unwrap();
    let mounted = yaml
        .replacen(
            "      volumes:\n",
            "      volumes:\n        - name: extra\n          secret:\n            secretName: klio-extra-tls\n",
            1,
        )
        .replacen(
            "          volumeMounts:\n",
            "          volumeMounts:\n            - mountPath: /extra\n              name: extra\n",
            1,
        );
    assert_eq!(mounted.matches("extra").count(), 4, "deploy/base/deployment.yaml has volumes and volumeMounts");
    std::fs::write(&deployment, mounted).unwrap();
    let err = klio_docs::generate(&klio_docs::Inputs { root: root.to_path_buf() }).unwrap_err();
    let err = format!("{err:#}");
    assert!(err.contains("the Secret klio-extra-tls the Deployment mounts"), "{err}");
}
