//! Errors as `metav1.Status` bodies, worded as kube-apiserver words them (kubectl prints
//! `Error from server (<reason>): <message>`).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Status, StatusDetails};
use poem::http::StatusCode;
use poem::Response;

use crate::routes::group;

/// A `Status` failure, ready to be sent.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub code: StatusCode,
    pub reason: &'static str,
    pub message: String,
    pub details: Option<Box<StatusDetails>>,
    pub retry_after_seconds: Option<u32>,
}

impl ApiError {
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

    pub fn not_found(resource: &str, name: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, "NotFound", format!("{resource}.{} \"{name}\" not found", group()))
            .about(resource, Some(name))
    }

    /// An unknown path (kube-apiserver's wording).
    pub fn no_route() -> Self {
        Self::new(StatusCode::NOT_FOUND, "NotFound", "the server could not find the requested resource")
    }

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

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "BadRequest", message)
    }

    pub fn not_acceptable(accepted: &[&str]) -> Self {
        Self::new(
            StatusCode::NOT_ACCEPTABLE,
            "NotAcceptable",
            format!("only the following media types are accepted: {}", accepted.join(", ")),
        )
    }

    pub fn forbidden(message: String, resource: Option<(&str, Option<&str>)>) -> Self {
        let err = Self::new(StatusCode::FORBIDDEN, "Forbidden", message);
        match resource {
            Some((resource, name)) => err.about(resource, name),
            None => err,
        }
    }

    pub fn unauthorized() -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "Unauthorized", "Unauthorized")
    }

    pub fn gone(message: impl Into<String>) -> Self {
        Self::new(StatusCode::GONE, "Expired", message)
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        let mut err = Self::new(StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailable", message);
        err.retry_after_seconds = Some(5);
        err
    }

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

    pub fn into_response(self) -> Response {
        let status = self.status();
        let mut resp = Response::builder().status(self.code).content_type("application/json");
        if let Some(secs) = self.retry_after_seconds {
            resp = resp.header("Retry-After", secs.to_string());
        }
        resp.body(serde_json::to_vec(&status).expect("a Status always serializes"))
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

/// Handlers return `Result<_, ApiError>`; poem renders the error with this.
impl poem::error::ResponseError for ApiError {
    fn status(&self) -> StatusCode {
        self.code
    }
    fn as_response(&self) -> Response {
        self.clone().into_response()
    }
}
