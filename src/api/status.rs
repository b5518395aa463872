//! Errors as `metav1.Status` bodies, worded as kube-apiserver words them (kubectl prints
//! `Error from server (<reason>): <message>`).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Status, StatusCause, StatusDetails};
use poem::http::StatusCode;
use poem::Response;

use crate::routes::group;

/// A `Status` failure, ready to be sent.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// The HTTP status, also the body's `code`.
    pub code: StatusCode,
    /// kube's `StatusReason`, which clients switch on (`NotFound`, `Expired`, ...).
    pub reason: &'static str,
    /// What kubectl prints after `Error from server (<reason>): `.
    pub message: String,
    /// What the error is about (group, kind, name) or its causes; boxed to keep `Result`s small.
    pub details: Option<Box<StatusDetails>>,
    /// Sent as the `Retry-After` header and `details.retryAfterSeconds`: clients back off that long.
    pub retry_after_seconds: Option<u32>,
}

impl ApiError {
    /// A failure without details; the named constructors below word the common ones as kube does.
    pub fn new(code: StatusCode, reason: &'static str, message: impl Into<String>) -> Self {
        Self { code, reason, message: message.into(), details: None, retry_after_seconds: None }
    }

    fn about(mut self, resource: &str, name: Option<&str>) -> Self {
        self.details = Some(Box::new(StatusDetails {
            group: Some(group().to_string()),
            kind: Some(resource.to_string()),
            name: name.map(str::to_string),
            retry_after_seconds: self.retry_after_seconds.map(|s| s as i32),
            ..Default::default()
        }));
        self
    }

    /// An object that does not exist (`kliobackups.<group> "<name>" not found`).
    pub fn not_found(resource: &str, name: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, "NotFound", format!("{resource}.{} \"{name}\" not found", group()))
            .about(resource, Some(name))
    }

    /// An unknown path (kube-apiserver's wording).
    pub fn no_route() -> Self {
        Self::new(StatusCode::NOT_FOUND, "NotFound", "the server could not find the requested resource")
    }

    /// A write, or any method the API does not serve, about the resource when one is named.
    pub fn method_not_allowed(resource: Option<(&str, Option<&str>)>) -> Self {
        let err = Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
        );
        match resource {
            Some((resource, name)) => err.about(resource, name),
            None => err,
        }
    }

    /// A malformed request (kube's `NewBadRequest`): the message says what is wrong.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "BadRequest", message)
    }

    /// No media type of the Accept header can be produced; the message lists those that can.
    pub fn not_acceptable(accepted: &[&str]) -> Self {
        Self::new(
            StatusCode::NOT_ACCEPTABLE,
            "NotAcceptable",
            format!("only the following media types are accepted: {}", accepted.join(", ")),
        )
    }

    /// What authorization denied; `message` is kube's `User "..." cannot <verb> ...` text.
    pub fn forbidden(message: String, resource: Option<(&str, Option<&str>)>) -> Self {
        let err = Self::new(StatusCode::FORBIDDEN, "Forbidden", message);
        match resource {
            Some((resource, name)) => err.about(resource, name),
            None => err,
        }
    }

    /// No verified identity (kube answers just "Unauthorized", whatever failed).
    pub fn unauthorized() -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "Unauthorized", "Unauthorized")
    }

    /// A resourceVersion or continue token too old to serve (`Expired`): clients relist.
    pub fn gone(message: impl Into<String>) -> Self {
        Self::new(StatusCode::GONE, "Expired", message)
    }

    /// A catalog source that cannot be reached now: clients retry after 5 s.
    pub fn unavailable(message: impl Into<String>) -> Self {
        let mut err = Self::new(StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailable", message);
        err.retry_after_seconds = Some(5);
        err
    }

    /// A catalog source that answered, but not with anything usable.
    pub fn bad_gateway(message: impl Into<String>) -> Self {
        // kube has no BadGateway reason; InternalError is what clients know for 5xx.
        Self::new(StatusCode::BAD_GATEWAY, "InternalError", message)
    }

    /// A request that waited too long for this server to catch up (kube's 504 Timeout).
    pub fn timeout(message: impl Into<String>) -> Self {
        let mut err = Self::new(StatusCode::GATEWAY_TIMEOUT, "Timeout", message);
        err.retry_after_seconds = Some(1);
        err
    }

    /// A resourceVersion this replica has not reached after waiting for it: kube-apiserver's
    /// `NewTooLargeResourceVersionError` (k8s.io/apiserver/pkg/storage/errors.go), a 504 Timeout
    /// whose message `NewTimeoutError` prefixes with "Timeout: ", with the
    /// `ResourceVersionTooLarge` cause client-go's reflector looks for and a retry after 1 s
    /// (the watch cache's `resourceVersionTooHighRetrySeconds`).
    pub fn too_large_resource_version(asked: &str, current: &str) -> Self {
        let mut err = Self::timeout(format!("Timeout: Too large resource version: {asked}, current: {current}"));
        err.details = Some(Box::new(StatusDetails {
            causes: Some(vec![StatusCause {
                reason: Some("ResourceVersionTooLarge".into()),
                message: Some("Too large resource version".into()),
                field: None,
            }]),
            ..Default::default()
        }));
        err
    }

    /// kube's `NewInvalid` (422): `<Kind>.<group> "<name>" is invalid: <errors>`, each field
    /// error a cause.
    pub fn invalid(group: &str, kind: &str, name: &str, errors: &[FieldError]) -> Self {
        let qualified = if group.is_empty() { kind.to_string() } else { format!("{kind}.{group}") };
        // utilerrors.NewAggregate: one error as itself, several in brackets, duplicates once.
        let mut texts: Vec<String> = vec![];
        for e in errors {
            let text = e.to_string();
            if !texts.contains(&text) {
                texts.push(text);
            }
        }
        let aggregate = match texts.len() {
            0 => String::new(),
            1 => format!(": {}", texts[0]),
            _ => format!(": [{}]", texts.join(", ")),
        };
        let mut err = Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid",
            format!("{qualified} {name:?} is invalid{aggregate}"),
        );
        err.details = Some(Box::new(StatusDetails {
            group: Some(group.to_string()),
            kind: Some(kind.to_string()),
            name: Some(name.to_string()).filter(|n| !n.is_empty()),
            causes: Some(
                errors
                    .iter()
                    .map(|e| StatusCause {
                        reason: Some(e.kind.cause().into()),
                        message: Some(e.body()),
                        field: Some(e.field.to_string()),
                    })
                    .collect(),
            ),
            ..Default::default()
        }));
        err
    }

    /// A failure of the server itself (kube's `NewInternalError`).
    pub fn internal(message: impl std::fmt::Display) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", format!("Internal error occurred: {message}"))
    }

    /// The `metav1.Status` body.
    pub fn status(&self) -> Status {
        let mut details = self.details.as_deref().cloned();
        if let Some(secs) = self.retry_after_seconds {
            details.get_or_insert_with(Default::default).retry_after_seconds = Some(secs as i32);
        }
        Status {
            status: Some("Failure".into()),
            message: Some(self.message.clone()),
            reason: Some(self.reason.into()),
            details,
            code: Some(i32::from(self.code.as_u16())),
            ..Default::default()
        }
    }

    /// The Status as a JSON response, with `Retry-After` when there is one (kube sends Status
    /// bodies as JSON whatever the request's Accept).
    pub fn into_response(self) -> Response {
        let status = self.status();
        let mut resp = Response::builder().status(self.code).content_type("application/json");
        if let Some(secs) = self.retry_after_seconds {
            resp = resp.header("Retry-After", secs.to_string());
        }
        resp.body(serde_json::to_vec(&status).expect("a Status always serializes"))
    }
}

/// One field error of a validation (k8s.io/apimachinery's `field.Error`), worded as kube words it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// The field's path, as kube names it (`resourceVersionMatch`, `sendInitialEvents`).
    pub field: &'static str,
    /// What is wrong with it.
    pub kind: FieldErrorKind,
}

/// The kinds of field error this server reports (a subset of apimachinery's `field.ErrorType`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldErrorKind {
    /// `Forbidden: <detail>`.
    Forbidden(&'static str),
    /// `Unsupported value: "<value>": supported values: "<a>", "<b>"`.
    NotSupported {
        /// The value given.
        value: String,
        /// The values that would have been accepted.
        supported: &'static [&'static str],
    },
}

impl FieldErrorKind {
    /// The cause's `reason` (the field error type).
    fn cause(&self) -> &'static str {
        match self {
            Self::Forbidden(_) => "FieldValueForbidden",
            Self::NotSupported { .. } => "FieldValueNotSupported",
        }
    }
}

impl FieldError {
    /// A field that must not be set in this combination; `detail` says why.
    pub fn forbidden(field: &'static str, detail: &'static str) -> Self {
        Self { field, kind: FieldErrorKind::Forbidden(detail) }
    }

    /// A value outside `supported`.
    pub fn not_supported(field: &'static str, value: &str, supported: &'static [&'static str]) -> Self {
        Self { field, kind: FieldErrorKind::NotSupported { value: value.to_string(), supported } }
    }

    /// `field.Error.ErrorBody()`: the text after the field name, also each cause's message.
    fn body(&self) -> String {
        let quote = |s: &str| serde_json::to_string(s).unwrap_or_default();
        match &self.kind {
            FieldErrorKind::Forbidden(detail) => format!("Forbidden: {detail}"),
            FieldErrorKind::NotSupported { value, supported } => {
                let values: Vec<String> = supported.iter().map(|v| quote(v)).collect();
                format!("Unsupported value: {}: supported values: {}", quote(value), values.join(", "))
            }
        }
    }
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.body())
    }
}

impl From<crate::catalog::CatalogError> for ApiError {
    fn from(err: crate::catalog::CatalogError) -> Self {
        match err {
            crate::catalog::CatalogError::Unreachable { .. } => ApiError::unavailable(err.to_string()),
            crate::catalog::CatalogError::BadResponse { .. } => ApiError::bad_gateway(err.to_string()),
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.code.as_u16(), self.reason, self.message)
    }
}

impl std::error::Error for ApiError {}

impl poem::IntoResponse for ApiError {
    fn into_response(self) -> Response {
        ApiError::into_response(self)
    }
}

/// Status bodies in the format the client accepts, as kube-apiserver's `ErrorNegotiated` writes
/// every error (authentication, authorization, handlers): YAML for `Accept: application/yaml`,
/// JSON otherwise. Errors are rendered as JSON where they arise; this converts the few a YAML
/// client gets.
pub(crate) async fn negotiate_error(mut resp: Response, format: super::negotiate::Format) -> Response {
    let is_status = resp.status().is_client_error() || resp.status().is_server_error();
    if format != super::negotiate::Format::Yaml || !is_status {
        return resp;
    }
    let json = resp.headers().get("content-type").is_some_and(|v| v.as_bytes() == b"application/json");
    if !json {
        return resp;
    }
    // A Status body: small, already complete.
    let body = resp.take_body().into_bytes().await.unwrap_or_default();
    match super::yaml::from_json(&body) {
        Ok(yaml) => {
            resp.headers_mut().insert("content-type", poem::http::HeaderValue::from_static("application/yaml"));
            resp.set_body(yaml);
        }
        Err(_) => resp.set_body(body),
    }
    resp
}

/// The Status body of an error poem or a handler returned: ours as they are, poem's routing
/// errors as kube-apiserver words them, anything else a 500 that says nothing more.
pub(crate) fn error_response(err: poem::Error) -> Response {
    if let Some(api_err) = err.downcast_ref::<ApiError>() {
        api_err.clone().into_response()
    } else if err.is::<poem::error::NotFoundError>() {
        ApiError::no_route().into_response()
    } else if err.is::<poem::error::MethodNotAllowedError>() {
        ApiError::method_not_allowed(None).into_response()
    } else if err.status().is_client_error() {
        ApiError::new(err.status(), "BadRequest", err.to_string()).into_response()
    } else {
        tracing::error!(error = %err, "unhandled error");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", "Internal error occurred").into_response()
    }
}

/// Handlers return `Result<_, ApiError>`; poem renders the error with this.
impl poem::error::ResponseError for ApiError {
    fn status(&self) -> StatusCode {
        self.code
    }
    fn as_response(&self) -> Response {
        self.clone().into_response()
    }
}
