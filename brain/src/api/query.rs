//! Query strings, one rule for every operation: a request may carry only the query parameters
//! its OpenAPI entry declares (anything else is a 400 naming the parameter and what the
//! operation takes), and a declared parameter of the wrong type is a 400 in the one error shape.
//! The declared parameters are read from the generated document, so the server cannot accept
//! what the document does not say.

use std::collections::{BTreeSet, HashMap};
use std::sync::OnceLock;

use axum::extract::{FromRequestParts, MatchedPath, Query, Request};
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use utoipa::OpenApi;
use utoipa::openapi::path::ParameterIn;

use super::{ApiDoc, ApiError};

/// (METHOD, path template) → the query parameters the document declares for it.
type Declared = HashMap<(String, String), BTreeSet<String>>;

fn declared() -> &'static Declared {
    static DECLARED: OnceLock<Declared> = OnceLock::new();
    DECLARED.get_or_init(|| {
        let mut out = Declared::new();
        for (path, item) in ApiDoc::openapi().paths.paths {
            let ops = [
                ("GET", &item.get),
                ("PUT", &item.put),
                ("POST", &item.post),
                ("DELETE", &item.delete),
                ("PATCH", &item.patch),
            ];
            for (method, op) in ops {
                let Some(op) = op else { continue };
                let names = op
                    .parameters
                    .iter()
                    .flatten()
                    .filter(|p| matches!(p.parameter_in, ParameterIn::Query))
                    .map(|p| p.name.clone())
                    .collect();
                out.insert((method.to_string(), path.clone()), names);
            }
        }
        out
    })
}

/// Refuses query parameters the matched operation does not declare (a route layer: it runs
/// after routing, when the operation is known).
pub async fn only_declared(req: Request, next: Next) -> Response {
    let Some(query) = req.uri().query().filter(|q| !q.is_empty()) else {
        return next.run(req).await;
    };
    let Some(path) = req.extensions().get::<MatchedPath>().map(|p| p.as_str().to_string()) else {
        return next.run(req).await;
    };
    let method = req.method().as_str().to_string();
    let Some(allowed) = declared().get(&(method.clone(), path.clone())) else {
        return next.run(req).await;
    };
    let pairs: Vec<(String, String)> = match serde_urlencoded::from_str(query) {
        Ok(p) => p,
        Err(e) => {
            return ApiError::bad_request(format!("the query string is malformed: {e}")).into_response();
        }
    };
    if let Some((unknown, _)) = pairs.iter().find(|(k, _)| !allowed.contains(k)) {
        let takes = if allowed.is_empty() {
            "no query parameters".to_string()
        } else {
            allowed.iter().map(String::as_str).collect::<Vec<_>>().join(", ")
        };
        let msg = format!("unknown query parameter {unknown:?}: {method} {path} takes {takes}");
        return ApiError::new(axum::http::StatusCode::BAD_REQUEST, "unknown_query_parameter", msg)
            .into_response();
    }
    next.run(req).await
}

/// `Query<T>` whose refusal (a value of the wrong type, a repeated parameter) is a 400 in the
/// one error shape, naming the parameter.
#[derive(Debug)]
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<ApiQuery<T>, ApiError> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(v)) => Ok(ApiQuery(v)),
            Err(e) => {
                Err(ApiError::new(axum::http::StatusCode::BAD_REQUEST, "bad_query_parameter", e.body_text()))
            }
        }
    }
}
