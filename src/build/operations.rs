//! Build-time only (included by `build.rs`): generates `operations.rs`, the document's
//! operations as poem-openapi operations, so poem-openapi parses and validates every parameter
//! as the document types it, and the spec poem-openapi derives can be compared with the document
//! (`tests/integration/spec_drift.rs`).
//!
//! For each GET operation of the document it generates:
//! * a query struct (`ListQuery`, `GetQuery`, after `x-kubernetes-action`) holding the typed
//!   query parameters, with `from_query`, which reads them with the very parsers poem-openapi's
//!   `Query` extractor uses (the guard reads the request with it, see `src/api/request.rs`);
//! * an operation method of `ResourceOperations<H>` whose parameters carry the document's names,
//!   types, descriptions, defaults and bounds, calling `H`'s handler of the same action;
//! * a response type whose OpenAPI description is the document's responses (codes, media types,
//!   schemas); the body and its media type stay the handler's (kube's content negotiation).
//!
//! Enumerated string parameters become poem-openapi enums, read through `KubeEnum` (apimachinery
//! reads an empty value as none); booleans are `KubeBool` (apimachinery reads any value but `0`
//! and `false` as true); non-negative integers are `u64`.

use std::fmt::Write as _;

use anyhow::{anyhow, bail, Result};
use serde_json::Value;

/// One parameter of an operation, resolved from `#/components/parameters` when referenced.
struct Param {
    name: String,
    location: String,
    description: String,
    required: bool,
    /// The Rust type poem-openapi parses (without `Option`).
    ty: String,
    /// Rust expression of the document's default, if any.
    default: Option<String>,
    /// `validator(..)` arguments.
    validator: Option<String>,
    /// A generated enum: (type name, values).
    enumeration: Option<(String, Vec<String>)>,
}

impl Param {
    /// The field or argument name: `includeObject` -> `include_object`, `continue` -> `continue_`.
    fn ident(&self) -> String {
        let snake = super::snake_case(&self.name);
        match snake.strip_prefix("r#") {
            Some(keyword) => format!("{keyword}_"),
            None => snake,
        }
    }

    /// The type of the field: `Option<T>` unless required or defaulted.
    fn field_type(&self) -> String {
        if self.required || self.default.is_some() {
            self.ty.clone()
        } else {
            format!("Option<{}>", self.ty)
        }
    }

    /// The type poem-openapi parses: the field's, but for an optional enumeration, read through
    /// `KubeEnum` (an empty value is no value, as apimachinery reads a string).
    fn parsed_type(&self) -> String {
        match (&self.enumeration, self.required) {
            (Some(_), false) => format!("crate::api::operations::KubeEnum<{}>", self.ty),
            _ => self.field_type(),
        }
    }

    /// `parsed`, a value of [`Param::parsed_type`], as a value of [`Param::field_type`].
    fn to_field(&self, parsed: &str) -> String {
        match (&self.enumeration, self.required) {
            (Some(_), false) => format!("{parsed}.0"),
            _ => parsed.to_string(),
        }
    }
}

fn pascal_case(name: &str) -> String {
    let mut chars = name.chars();
    chars.next().map(|c| c.to_ascii_uppercase().to_string() + chars.as_str()).unwrap_or_default()
}

fn resolve<'a>(doc: &'a Value, item: &'a Value, section: &str) -> Result<&'a Value> {
    match item.get("$ref").and_then(Value::as_str) {
        Some(r) => {
            let name = r
                .strip_prefix(&format!("#/components/{section}/"))
                .ok_or_else(|| anyhow!("unsupported $ref {r} (expected #/components/{section}/...)"))?;
            doc["components"][section].get(name).ok_or_else(|| anyhow!("$ref {r} names nothing"))
        }
        None => Ok(item),
    }
}

fn param(doc: &Value, raw: &Value, at: &str) -> Result<Param> {
    let p = resolve(doc, raw, "parameters")?;
    let name = p["name"].as_str().ok_or_else(|| anyhow!("{at}: a parameter without a name"))?.to_string();
    let location = p["in"].as_str().unwrap_or_default().to_string();
    if location != "query" && location != "path" {
        bail!("{at}: parameter {name} is in {location:?}; only query and path parameters are generated");
    }
    let schema = &p["schema"];
    let mut enumeration = None;
    let mut validator = None;
    let ty = match (schema["type"].as_str(), schema.get("enum")) {
        (Some("string"), Some(values)) => {
            let values: Vec<String> =
                values.as_array().into_iter().flatten().filter_map(Value::as_str).map(str::to_string).collect();
            let ty = pascal_case(&name);
            enumeration = Some((ty.clone(), values));
            ty
        }
        (Some("string"), None) => "String".to_string(),
        (Some("integer"), None) if schema["minimum"].as_i64() == Some(0) => {
            validator = Some("minimum(value = \"0\")".to_string());
            "u64".to_string()
        }
        (Some("integer"), None) => "i64".to_string(),
        (Some("boolean"), None) => "crate::api::operations::KubeBool".to_string(),
        (other, _) => bail!("{at}: parameter {name} has an unsupported schema type {other:?}"),
    };
    let default = match schema.get("default") {
        None => None,
        // Its empty value must read as the default, which `KubeEnum` does not know.
        Some(_) if enumeration.is_some() => {
            bail!("{at}: parameter {name} is an enumeration with a default; only enumerations without are generated")
        }
        Some(Value::String(s)) if enumeration.is_some() => Some(format!("{ty}::{}", pascal_case(s))),
        Some(Value::String(s)) => Some(format!("{s:?}.to_string()")),
        Some(Value::Number(n)) => Some(n.to_string()),
        Some(Value::Bool(b)) => Some(format!("crate::api::operations::KubeBool({b})")),
        Some(other) => bail!("{at}: parameter {name} has an unsupported default {other}"),
    };
    Ok(Param {
        description: p["description"].as_str().unwrap_or_default().to_string(),
        required: p["required"].as_bool().unwrap_or(location == "path"),
        name,
        location,
        ty,
        default,
        validator,
        enumeration,
    })
}

fn doc_lines(out: &mut String, indent: &str, text: &str) {
    for line in text.lines() {
        let _ = writeln!(out, "{indent}/// {line}");
    }
}

/// The `MetaResponses` of an operation, from the document's responses, and the statements
/// registering the schemas they reference.
fn responses(doc: &Value, op: &Value, at: &str) -> Result<(String, String)> {
    let mut out = String::from("poem_openapi::registry::MetaResponses { responses: vec![\n");
    let mut register = String::new();
    for (code, raw) in op["responses"].as_object().into_iter().flatten() {
        let resp = resolve(doc, raw, "responses")?;
        let status: u16 = code.parse().map_err(|_| anyhow!("{at}: response code {code:?} is not a status"))?;
        let mut content = String::new();
        for (media_type, media) in resp["content"].as_object().into_iter().flatten() {
            let schema = media["schema"]["$ref"]
                .as_str()
                .and_then(|r| r.strip_prefix("#/components/schemas/"))
                .ok_or_else(|| anyhow!("{at}: {code} {media_type}: only schema references are generated"))?;
            let description = doc["components"]["schemas"][schema]["description"]
                .as_str()
                .ok_or_else(|| anyhow!("{at}: {code} {media_type}: schema {schema} is not in the document"))?;
            let statement =
                format!("crate::api::operations::register_schema(registry, {schema:?}, {description:?});\n");
            if !register.contains(&statement) {
                register.push_str(&statement);
            }
            let _ = write!(
                content,
                "poem_openapi::registry::MetaMediaType {{ content_type: {media_type:?}, schema: poem_openapi::registry::MetaSchemaRef::Reference({schema:?}.to_string()) }}, "
            );
        }
        let _ = writeln!(
            out,
            "            poem_openapi::registry::MetaResponse {{ description: {:?}, status: Some({status}), status_range: None, content: vec![{content}], headers: vec![] }},",
            resp["description"].as_str().unwrap_or_default()
        );
    }
    out.push_str("        ] }");
    Ok((out, register))
}

/// `operations.rs`.
pub fn generate(doc: &Value) -> Result<String> {
    let disc = &doc["x-klio-discovery"];
    let prefix = format!(
        "/apis/{}/{}",
        disc["group"].as_str().unwrap_or_default(),
        disc["version"].as_str().unwrap_or_default()
    );
    let mut out = String::from(
        "// @generated by build.rs (src/build/operations.rs) from openapi/kliocatalog.enterprisedb.io_v1alpha1.json. Do not edit.\n\n",
    );
    let mut enums: Vec<(String, Vec<String>)> = vec![];
    let mut structs = String::new();
    let mut trait_fns = String::new();
    let mut methods = String::new();
    let mut paths = vec![];

    for (path, item) in doc["paths"].as_object().into_iter().flatten() {
        let rest = path.strip_prefix(&prefix).ok_or_else(|| anyhow!("{path}: not under {prefix}"))?;
        paths.push(rest.replace('{', ":").replace('}', ""));
        for method in ["put", "post", "patch", "delete", "head", "options"] {
            if item.get(method).is_some() {
                bail!("{path}: {method} is documented, but the API is read-only and only GET is generated");
            }
        }
        let op = &item["get"];
        let action = op["x-kubernetes-action"].as_str().ok_or_else(|| anyhow!("{path}: no x-kubernetes-action"))?;
        if !matches!(action, "list" | "get") {
            bail!("{path}: no handler for action {action:?}");
        }
        let at = format!("GET {path}");
        let mut params = vec![];
        for raw in
            item["parameters"].as_array().into_iter().flatten().chain(op["parameters"].as_array().into_iter().flatten())
        {
            params.push(param(doc, raw, &at)?);
        }
        let (path_params, query_params): (Vec<&Param>, Vec<&Param>) = params.iter().partition(|p| p.location == "path");
        for p in &params {
            if let Some(e) = &p.enumeration {
                if !enums.iter().any(|(name, _)| name == &e.0) {
                    enums.push(e.clone());
                }
            }
        }

        // The query struct.
        let query_ty = format!("{}Query", pascal_case(action));
        let _ = writeln!(
            structs,
            "/// The query parameters of `{action}` (`GET {path}`), typed as the document types them.\n#[derive(Debug, Clone, PartialEq, Default)]\npub struct {query_ty} {{"
        );
        for p in &query_params {
            doc_lines(&mut structs, "    ", &format!("`{}`: {}", p.name, p.description));
            let _ = writeln!(structs, "    pub {}: {},", p.ident(), p.field_type());
        }
        let _ = writeln!(
            structs,
            "}}\n\nimpl {query_ty} {{\n    /// Reads the parameters from a parsed query with the parsers poem-openapi's `Query`\n    /// extractor uses: the same values give the same result, or the same error.\n    pub fn from_query(query: &crate::api::request::Query) -> Result<Self, poem_openapi::error::ParseParamError> {{\n        Ok(Self {{"
        );
        for p in &query_params {
            match &p.default {
                Some(d) => {
                    let _ = writeln!(
                        structs,
                        "            {}: crate::api::operations::param::<Option<{}>>(query, {:?})?.unwrap_or_else(|| {d}),",
                        p.ident(),
                        p.ty,
                        p.name
                    );
                }
                None => {
                    let _ = writeln!(
                        structs,
                        "            {}: {},",
                        p.ident(),
                        p.to_field(&format!(
                            "crate::api::operations::param::<{}>(query, {:?})?",
                            p.parsed_type(),
                            p.name
                        ))
                    );
                }
            }
        }
        structs.push_str("        })\n    }\n}\n\n");

        // The handler the operation calls.
        let description = op["description"].as_str().unwrap_or_default();
        doc_lines(&mut trait_fns, "    ", &format!("`{action}`, `GET {path}`: {description}."));
        let path_args: String = path_params.iter().map(|p| format!("{}: String, ", p.ident())).collect();
        let _ = writeln!(
            trait_fns,
            "    fn {action}(&self, req: &poem::Request, {path_args}query: {query_ty}) -> impl std::future::Future<Output = poem::Response> + Send;"
        );

        // The response type.
        let response_ty = format!("{}Response", pascal_case(action));
        let (meta, register) = responses(doc, op, &at)?;
        let _ = writeln!(
            structs,
            "/// What `{action}` answers; its OpenAPI description is the document's responses, its body\n/// and media type the handler's (kube's content negotiation).\npub struct {response_ty}(pub poem::Response);\n\nimpl poem::IntoResponse for {response_ty} {{\n    fn into_response(self) -> poem::Response {{\n        self.0\n    }}\n}}\n\nimpl poem_openapi::ApiResponse for {response_ty} {{\n    fn meta() -> poem_openapi::registry::MetaResponses {{\n        {meta}\n    }}\n\n    fn register(registry: &mut poem_openapi::registry::Registry) {{\n        {register}    }}\n}}\n"
        );

        // The operation.
        doc_lines(&mut methods, "    ", description);
        let operation_id = op["operationId"].as_str().ok_or_else(|| anyhow!("{at}: no operationId"))?;
        let _ = writeln!(
            methods,
            "    #[allow(clippy::too_many_arguments)] // one argument per parameter of the document\n    #[oai(path = {:?}, method = \"get\", operation_id = {operation_id:?})]\n    async fn {action}(\n        &self,\n        req: &poem::Request,",
            rest.replace('{', ":").replace('}', "")
        );
        for p in &params {
            doc_lines(&mut methods, "        ", &p.description);
            let mut attrs = vec![format!("name = {:?}", p.name)];
            if let Some(v) = &p.validator {
                attrs.push(format!("validator({v})"));
            }
            if let Some(d) = &p.default {
                attrs.push(format!("default = \"default_{}_{}\"", action, p.ident()));
                let _ = writeln!(
                    structs,
                    "#[allow(dead_code)]\nfn default_{action}_{}() -> {} {{\n    {d}\n}}\n",
                    p.ident(),
                    p.ty
                );
            }
            let extractor = if p.location == "path" { "Path" } else { "Query" };
            let _ = writeln!(
                methods,
                "        #[oai({})] {}: poem_openapi::param::{extractor}<{}>,",
                attrs.join(", "),
                p.ident(),
                p.parsed_type()
            );
        }
        let path_values: String = path_params.iter().map(|p| format!("{}.0, ", p.ident())).collect();
        let fields: String = query_params
            .iter()
            .map(|p| format!("{}: {}, ", p.ident(), p.to_field(&format!("{}.0", p.ident()))))
            .collect();
        let _ = writeln!(
            methods,
            "    ) -> {response_ty} {{\n        {response_ty}(self.0.{action}(req, {path_values}{query_ty} {{ {fields}}}).await)\n    }}\n"
        );
    }

    for (name, values) in &enums {
        let parameter = name[..1].to_ascii_lowercase() + &name[1..];
        let _ = writeln!(
            out,
            "/// The values the document allows for `{parameter}`.\n#[derive(poem_openapi::Enum, Debug, Clone, Copy, PartialEq, Eq)]\n#[oai(rename = {name:?})]\npub enum {name} {{"
        );
        for v in values {
            let _ = writeln!(out, "    /// `{parameter}={v}`.\n    #[oai(rename = {v:?})]\n    {},", pascal_case(v));
        }
        out.push_str("}\n\n");
    }
    out.push_str(&structs);
    let _ = writeln!(
        out,
        "/// What serves the document's operations: the server's handlers, or a test's.\npub trait ResourceHandlers: Send + Sync + 'static {{\n{trait_fns}}}\n"
    );
    let _ = writeln!(
        out,
        "/// The document's operations, served by `H`, under `/apis/<served group>/<version>`.\npub struct ResourceOperations<H>(pub H);\n\n#[poem_openapi::OpenApi(prefix_path = crate::routes::version_path())]\nimpl<H: ResourceHandlers> ResourceOperations<H> {{\n{methods}}}\n"
    );
    let _ = writeln!(
        out,
        "/// The document's title and version (`info`).\npub const DOCUMENT_INFO: (&str, &str) = ({:?}, {:?});\n",
        doc["info"]["title"].as_str().unwrap_or_default(),
        doc["info"]["version"].as_str().unwrap_or_default()
    );
    let _ = writeln!(
        out,
        "/// The document's paths under `/apis/<group>/<version>`, in poem's syntax.\npub const PATHS: &[&str] = &[{}];",
        paths.iter().map(|p| format!("{p:?}")).collect::<Vec<_>>().join(", ")
    );
    Ok(out)
}
