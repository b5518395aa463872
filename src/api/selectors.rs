//! Field selectors on the fields kube users expect to filter by.

use crate::model::KlioBackup;

/// The fields a selector may name.
pub const SELECTABLE_FIELDS: &[&str] = &["metadata.name", "spec.clusterName", "spec.backupID"];

#[derive(Debug, Clone, PartialEq, Eq)]
struct Requirement {
    field: &'static str,
    value: String,
    equal: bool,
}

/// A parsed `fieldSelector`: all requirements must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector {
    requirements: Vec<Requirement>,
}

impl FieldSelector {
    /// Parses `a=b,c==d,e!=f` (kube-apiserver's error wording).
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut requirements = vec![];
        for term in text.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let (field, value, equal) = if let Some((f, v)) = term.split_once("!=") {
                (f, v, false)
            } else if let Some((f, v)) = term.split_once("==") {
                (f, v, true)
            } else if let Some((f, v)) = term.split_once('=') {
                (f, v, true)
            } else {
                return Err(format!("invalid selector: '{text}'; can't understand '{term}'"));
            };
            let field = field.trim();
            let field = SELECTABLE_FIELDS
                .iter()
                .find(|f| **f == field)
                .ok_or_else(|| format!("field label not supported: {field}"))?;
            requirements.push(Requirement { field, value: value.trim().to_string(), equal });
        }
        Ok(Self { requirements })
    }

    pub fn matches(&self, b: &KlioBackup) -> bool {
        self.requirements.iter().all(|r| {
            let actual = match r.field {
                "metadata.name" => b.metadata.name.as_deref().unwrap_or_default(),
                "spec.clusterName" => &b.spec.cluster_name,
                _ => &b.spec.backup_id,
            };
            (actual == r.value) == r.equal
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backup(cluster: &str, id: &str) -> KlioBackup {
        let mut b = KlioBackup::default();
        b.metadata.name = Some(format!("{cluster}.{id}"));
        b.spec.cluster_name = cluster.into();
        b.spec.backup_id = id.into();
        b
    }

    #[test]
    fn equality_inequality_and_conjunction() {
        let a = backup("pg-a", "backup-1");
        let b = backup("pg-b", "backup-1");
        let s = FieldSelector::parse("spec.clusterName=pg-a").unwrap();
        assert!(s.matches(&a) && !s.matches(&b));
        let s = FieldSelector::parse("spec.clusterName!=pg-a,spec.backupID==backup-1").unwrap();
        assert!(!s.matches(&a) && s.matches(&b));
        let s = FieldSelector::parse("metadata.name=pg-b.backup-1").unwrap();
        assert!(s.matches(&b) && !s.matches(&a));
        assert!(FieldSelector::parse("").unwrap().matches(&a));
    }

    #[test]
    fn errors_use_kube_wording() {
        assert_eq!(FieldSelector::parse("status.phase=x").unwrap_err(), "field label not supported: status.phase");
        assert!(FieldSelector::parse("spec.clusterName").unwrap_err().starts_with("invalid selector"));
    }
}
