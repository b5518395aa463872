//! Field selectors on the fields kube users expect to filter by.

use crate::catalog::Backup;

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

    /// The name this selector requires (its first `metadata.name=` or `==` term), as
    /// apimachinery's `RequiresExactMatch("metadata.name")`: every object it matches has it.
    pub fn required_name(&self) -> Option<&str> {
        self.requirements.iter().find(|r| r.field == "metadata.name" && r.equal).map(|r| r.value.as_str())
    }

    /// Whether `b` satisfies every requirement.
    pub fn matches(&self, b: &Backup) -> bool {
        self.requirements.iter().all(|r| {
            let same = match r.field {
                "metadata.name" => b.name() == *r.value,
                "spec.clusterName" => *b.record().cluster_name == *r.value,
                _ => *b.record().name == *r.value,
            };
            same == r.equal
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backup(cluster: &str, id: &str) -> Backup {
        Backup::sample(cluster, id)
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
    fn the_required_name_is_the_first_name_equality() {
        let name = |s: &str| FieldSelector::parse(s).unwrap().required_name().map(str::to_string);
        assert_eq!(name("metadata.name=a"), Some("a".into()));
        assert_eq!(name("spec.clusterName=x,metadata.name==a"), Some("a".into()));
        assert_eq!(name("metadata.name=a,metadata.name=b"), Some("a".into()), "and it matches nothing but a");
        assert_eq!(name("metadata.name!=a"), None);
        assert_eq!(name(""), None);
    }

    #[test]
    fn errors_use_kube_wording() {
        assert_eq!(FieldSelector::parse("status.phase=x").unwrap_err(), "field label not supported: status.phase");
        assert!(FieldSelector::parse("spec.clusterName").unwrap_err().starts_with("invalid selector"));
    }
}

/// One requirement of a label selector.
#[derive(Debug, Clone, PartialEq, Eq)]
enum LabelRequirement {
    Exists(String),
    DoesNotExist(String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
}

/// A parsed `labelSelector` (equality- and set-based syntax); all requirements must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector {
    requirements: Vec<LabelRequirement>,
}

struct Cursor<'a> {
    text: &'a str,
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn skip_ws(&mut self) {
        while self.text[self.pos..].starts_with([' ', '\t']) {
            self.pos += 1;
        }
    }
    fn eat(&mut self, token: &str) -> bool {
        if self.text[self.pos..].starts_with(token) {
            self.pos += token.len();
            true
        } else {
            false
        }
    }
    fn word(&mut self, allowed: impl Fn(char) -> bool) -> &'a str {
        let start = self.pos;
        while let Some(c) = self.text[self.pos..].chars().next().filter(|c| allowed(*c)) {
            self.pos += c.len_utf8();
        }
        &self.text[start..self.pos]
    }
    fn at_end(&self) -> bool {
        self.pos >= self.text.len()
    }
}

fn key_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/')
}

fn value_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')
}

fn check_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    let name_ok = crate::config::is_label_value(name);
    let prefix_ok = prefix.is_none_or(|p| {
        !p.is_empty()
            && p.len() <= 253
            && p.split('.').all(|part| crate::config::is_label_value(part) && !part.contains('_'))
    });
    if name_ok && prefix_ok {
        Ok(())
    } else {
        Err(format!("invalid label key {key:?}: a qualified name is an optional DNS prefix and '/', then up to 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit"))
    }
}

fn check_value(value: &str) -> Result<(), String> {
    if value.is_empty() || crate::config::is_label_value(value) {
        Ok(())
    } else {
        Err(format!("invalid label value {value:?}: at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit"))
    }
}

impl LabelSelector {
    /// Parses kube's selector syntax: `a=b`, `a==b`, `a!=b`, `a in (x,y)`, `a notin (x)`, `a`, `!a`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let fail = |why: String| format!("unable to parse requirement: {why}");
        let mut c = Cursor { text, pos: 0 };
        let mut requirements = vec![];
        let mut after_comma = false;
        loop {
            c.skip_ws();
            if c.at_end() {
                if after_comma {
                    return Err(fail("a requirement is missing after ','".into()));
                }
                break;
            }
            let requirement = if c.eat("!") {
                c.skip_ws();
                let key = c.word(key_char);
                check_key(key).map_err(fail)?;
                LabelRequirement::DoesNotExist(key.to_string())
            } else {
                let key = c.word(key_char);
                check_key(key).map_err(fail)?;
                c.skip_ws();
                let key = key.to_string();
                if c.at_end() || c.text[c.pos..].starts_with(',') {
                    LabelRequirement::Exists(key)
                } else if c.eat("!=") {
                    c.skip_ws();
                    let v = c.word(value_char);
                    check_value(v).map_err(fail)?;
                    LabelRequirement::NotIn(key, vec![v.to_string()])
                } else if c.eat("==") || c.eat("=") {
                    c.skip_ws();
                    let v = c.word(value_char);
                    check_value(v).map_err(fail)?;
                    LabelRequirement::In(key, vec![v.to_string()])
                } else {
                    let op = c.word(|ch| ch.is_ascii_alphabetic());
                    let negate = match op {
                        "in" => false,
                        "notin" => true,
                        "" => return Err(fail(format!("unsupported operator at position {}", c.pos))),
                        other => return Err(fail(format!("unknown operator {other:?}"))),
                    };
                    c.skip_ws();
                    if !c.eat("(") {
                        let found = c.word(|ch| !ch.is_whitespace() && ch != ',');
                        return Err(fail(format!("found '{found}', expected: '('")));
                    }
                    let mut values = vec![];
                    loop {
                        c.skip_ws();
                        let v = c.word(value_char);
                        check_value(v).map_err(fail)?;
                        values.push(v.to_string());
                        c.skip_ws();
                        if c.eat(")") {
                            break;
                        }
                        if !c.eat(",") {
                            return Err(fail(format!("expected ',' or ')' in the values of {key}")));
                        }
                    }
                    if negate {
                        LabelRequirement::NotIn(key, values)
                    } else {
                        LabelRequirement::In(key, values)
                    }
                }
            };
            requirements.push(requirement);
            c.skip_ws();
            if c.at_end() {
                break;
            }
            if !c.eat(",") {
                return Err(fail(format!("unexpected {:?}", &c.text[c.pos..])));
            }
            after_comma = true;
        }
        Ok(Self { requirements })
    }

    /// No requirement: every object matches.
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// Whether the labels that `label` looks up satisfy every requirement.
    pub fn matches<'a>(&self, label: impl Fn(&str) -> Option<&'a str>) -> bool {
        let has = |k: &str, vs: &[String]| label(k).is_some_and(|v| vs.iter().any(|x| x == v));
        self.requirements.iter().all(|r| match r {
            LabelRequirement::Exists(k) => label(k).is_some(),
            LabelRequirement::DoesNotExist(k) => label(k).is_none(),
            LabelRequirement::In(k, vs) => has(k, vs),
            LabelRequirement::NotIn(k, vs) => !has(k, vs),
        })
    }
}

/// Label and field selectors together.
#[derive(Debug, Clone, Default)]
pub struct Selectors {
    /// `labelSelector`.
    pub labels: LabelSelector,
    /// `fieldSelector`.
    pub fields: FieldSelector,
}

impl Selectors {
    /// Neither selects: a list is the whole collection (it may be served from the render
    /// cache, and carries `remainingItemCount`).
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty() && self.fields == FieldSelector::default()
    }

    /// Whether `b` satisfies both selectors.
    pub fn matches(&self, b: &Backup) -> bool {
        self.fields.matches(b) && self.labels.matches(|k| b.label(k))
    }
}

#[cfg(test)]
mod label_tests {
    use super::*;
    use std::collections::BTreeMap;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn equality_and_set_based() {
        let l =
            labels(&[("kliocatalog.enterprisedb.io/cluster", "pg-a"), ("kliocatalog.enterprisedb.io/tier1", "true")]);
        let yes = [
            "",
            "kliocatalog.enterprisedb.io/cluster=pg-a",
            "kliocatalog.enterprisedb.io/cluster == pg-a",
            "kliocatalog.enterprisedb.io/cluster!=pg-b",
            "kliocatalog.enterprisedb.io/cluster in (pg-a, pg-b)",
            "kliocatalog.enterprisedb.io/cluster notin (pg-b)",
            "kliocatalog.enterprisedb.io/tier1",
            "!kliocatalog.enterprisedb.io/tier2",
            "kliocatalog.enterprisedb.io/tier2 notin (true)",
            "kliocatalog.enterprisedb.io/tier2!=true,kliocatalog.enterprisedb.io/cluster in (pg-a)",
        ];
        for s in yes {
            assert!(LabelSelector::parse(s).unwrap().matches(|k| l.get(k).map(String::as_str)), "{s}");
        }
        let no = [
            "kliocatalog.enterprisedb.io/cluster=pg-b",
            "kliocatalog.enterprisedb.io/tier2",
            "!kliocatalog.enterprisedb.io/tier1",
            "kliocatalog.enterprisedb.io/cluster in (pg-b,pg-c)",
            "kliocatalog.enterprisedb.io/cluster notin (pg-a)",
            "kliocatalog.enterprisedb.io/tier1=true,kliocatalog.enterprisedb.io/cluster=x",
        ];
        for s in no {
            assert!(!LabelSelector::parse(s).unwrap().matches(|k| l.get(k).map(String::as_str)), "{s}");
        }
    }

    #[test]
    fn syntax_errors_are_reported() {
        for bad in ["a in b", "a in (b", "a=b c", "a>1", "=x", "a=b,", "a=-b-", "a/b/c=x", ",a"] {
            assert!(LabelSelector::parse(bad).is_err(), "{bad:?} should not parse");
        }
        assert!(LabelSelector::parse("a=b,").is_err());
    }
}
