//! The repository inputs besides the OpenAPI document: the kubectl conformance cases with their
//! golden outputs (`conformance/kubectl-cases.tsv`, `conformance/expected/`) and the manifests
//! under `deploy/`.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use serde::Serialize;
use serde_json::Value;

use crate::markdown::esc;

/// The cases file, relative to the conformance directory.
pub const CASES_FILE: &str = "kubectl-cases.tsv";

/// One kubectl conformance case with its recorded outputs.
#[derive(Debug, Clone, Serialize)]
pub struct KubectlCase {
    /// The case's id (also its anchor on the kubectl page).
    pub id: String,
    /// `seq`, `bg` or `watch`: only `seq` cases are commands a reader can replay as shown.
    pub phase: String,
    /// The expected exit code (`watching` for the phase-2 watches).
    pub exit: String,
    /// kubectl's arguments.
    pub args: Vec<String>,
    /// The command line, quoted for a POSIX shell where needed.
    pub command: String,
    /// The golden stdout (empty when there is no file).
    pub stdout: String,
    /// The golden stderr (empty when there is no file).
    pub stderr: String,
}

/// Reads the cases as `conformance/kubectl.sh` does: tab-separated fields (runs of tabs are one
/// separator, as bash's `read` splits them), `#` lines and blank lines ignored.
pub fn kubectl_cases(conformance: &Path) -> Result<Vec<KubectlCase>> {
    let path = conformance.join(CASES_FILE);
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let mut cases: Vec<KubectlCase> = vec![];
    for (n, line) in text.lines().enumerate() {
        let fields: Vec<&str> = line.split('\t').filter(|f| !f.is_empty()).collect();
        if fields.is_empty() || fields[0].starts_with('#') {
            continue;
        }
        let where_ = format!("{}:{}", path.display(), n + 1);
        let [id, phase, exit, _compare, golden, _filter, args @ ..] = fields.as_slice() else {
            bail!("{where_}: a case has at least seven tab-separated fields");
        };
        if args.is_empty() {
            bail!("{where_}: a case has at least seven tab-separated fields");
        }
        if cases.iter().any(|c| c.id == *id) {
            bail!("{where_}: case {id} is defined twice");
        }
        // `out,err` names the two streams' files when they differ.
        let (out, err) = golden.split_once(',').unwrap_or((golden, golden));
        let read = |base: &str, ext: &str| -> Result<String> {
            let path = conformance.join("expected").join(format!("{base}.{ext}"));
            match std::fs::read_to_string(&path) {
                Ok(text) => Ok(text),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
                Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
            }
        };
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let command = std::iter::once("kubectl".to_string())
            .chain(args.iter().map(|a| shell_quote(a)))
            .collect::<Vec<_>>()
            .join(" ");
        cases.push(KubectlCase {
            id: id.to_string(),
            phase: phase.to_string(),
            exit: exit.to_string(),
            command,
            args,
            stdout: read(out, "out")?,
            stderr: read(err, "err")?,
        });
    }
    if cases.is_empty() {
        bail!("{} defines no case", path.display());
    }
    Ok(cases)
}

/// A word quoted for a POSIX shell when it needs to be.
pub fn shell_quote(word: &str) -> String {
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

/// A terminal: the command, its output, stderr marked, and a non-zero exit status.
pub fn terminal(case: &KubectlCase) -> String {
    let mut body = format!("<span class=\"prompt\">$ </span>{}\n", esc(&case.command));
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
    if case.exit != "0" {
        let _ = writeln!(body, "<span class=\"status\">(exit status {})</span>", esc(&case.exit));
    }
    format!("<div class=\"code terminal\"><pre><code>{}</code></pre></div>\n", body.trim_end_matches('\n'))
}

// ---------------------------------------------------------------------------------------------
// deploy/: the manifests.

/// An object of the kustomize base.
#[derive(Debug, Serialize)]
pub struct Manifest {
    /// Its file, relative to the repository.
    pub file: String,
    /// Its kind.
    pub kind: String,
    /// Its name.
    pub name: String,
    /// Its namespace (empty for cluster-scoped objects).
    pub namespace: String,
}

/// An overlay of `deploy/overlays/`.
#[derive(Debug, Serialize)]
pub struct Overlay {
    /// Its directory name.
    pub name: String,
    /// The comment at the top of its kustomization.yaml, joined into one paragraph.
    pub comment: String,
}

/// The manifests under `deploy/`.
pub struct Deploy {
    /// The objects of the base.
    pub base: Vec<Manifest>,
    /// The overlays, by name.
    pub overlays: Vec<Overlay>,
    deployment: Value,
    network_policy: Option<Value>,
    pdb: Option<Value>,
}

impl Deploy {
    /// Reads `dir` (the repository's `deploy/`).
    pub fn load(dir: &Path) -> Result<Self> {
        let base_dir = dir.join("base");
        let kustomization = read_yaml(&base_dir.join("kustomization.yaml"))?;
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
                .join(" ");
            overlays.push(Overlay { name, comment });
        }
        Ok(Self { base, overlays, network_policy: find("NetworkPolicy"), pdb: find("PodDisruptionBudget"), deployment })
    }

    fn container(&self) -> &Value {
        &self.deployment["spec"]["template"]["spec"]["containers"][0]
    }

    /// The value the Deployment gives an environment variable.
    pub fn env(&self, name: &str) -> Option<String> {
        self.container()["env"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|e| e["name"].as_str() == Some(name))
            .and_then(|e| e["value"].as_str().map(str::to_string))
    }

    /// The Deployment's replicas.
    pub fn replicas(&self) -> String {
        number_text(&self.deployment["spec"]["replicas"]).unwrap_or_else(|| "1".into())
    }

    /// The PodDisruptionBudget's `minAvailable`.
    pub fn pdb_min_available(&self) -> String {
        self.pdb.as_ref().and_then(|p| number_text(&p["spec"]["minAvailable"])).unwrap_or_else(|| "?".into())
    }

    /// A field of a probe (`livenessProbe`, `readinessProbe`), e.g. `periodSeconds`.
    pub fn probe(&self, which: &str, field: &str) -> String {
        number_text(&self.container()[which][field]).unwrap_or_else(|| "?".into())
    }

    /// The HTTP path a probe asks.
    pub fn probe_path(&self, which: &str) -> String {
        self.container()[which]["httpGet"]["path"].as_str().unwrap_or("?").to_string()
    }

    /// The Secrets the Deployment mounts: (Secret name, mount path).
    pub fn secrets(&self) -> Vec<(String, String)> {
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

    /// " The base Deployment requests … and limits …", from the container's resources.
    pub fn resources_text(&self) -> String {
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

    /// The ports the NetworkPolicy lets the pods reach, `443/TCP, …`.
    pub fn egress_ports(&self) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cases_are_read_as_kubectl_sh_reads_them() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("expected")).unwrap();
        std::fs::write(dir.path().join("expected/get.out"), "NAME\nx\n").unwrap();
        std::fs::write(dir.path().join("expected/e.err"), "oops\n").unwrap();
        std::fs::write(
            dir.path().join(CASES_FILE),
            "# a comment\n\nget\tseq\t0\ttext\tget\t-\tget\t\tkb\n\
             sel\tseq\t1\ttext\tget,e\t-\tget\t-l\tk in (a,b)\t-o\tjsonpath={.a}\n",
        )
        .unwrap();
        let cases = kubectl_cases(dir.path()).unwrap();
        assert_eq!(cases.len(), 2);
        assert_eq!(cases[0].args, ["get", "kb"], "a run of tabs is one separator");
        assert_eq!((cases[0].stdout.as_str(), cases[0].stderr.as_str()), ("NAME\nx\n", ""));
        assert_eq!(cases[1].command, "kubectl get -l 'k in (a,b)' -o 'jsonpath={.a}'");
        assert_eq!((cases[1].stdout.as_str(), cases[1].stderr.as_str()), ("NAME\nx\n", "oops\n"));
        let html = terminal(&cases[1]);
        assert!(
            html.contains("<span class=\"stderr\">oops\n</span><span class=\"status\">(exit status 1)</span>"),
            "{html}"
        );

        std::fs::write(dir.path().join(CASES_FILE), "get\tseq\t0\ttext\tget\t-\n").unwrap();
        assert!(kubectl_cases(dir.path()).is_err(), "no argument");
        std::fs::write(dir.path().join(CASES_FILE), "a\tseq\t0\ttext\tget\t-\tx\na\tseq\t0\ttext\tget\t-\ty\n")
            .unwrap();
        assert!(kubectl_cases(dir.path()).is_err(), "twice");
    }

    #[test]
    fn shell_quoting() {
        assert_eq!(shell_quote("jsonpath={.a}"), "'jsonpath={.a}'");
        assert_eq!(shell_quote("spec.clusterName=x"), "spec.clusterName=x");
        assert_eq!(shell_quote("it's"), "'it'\\''s'");
    }
}
