//! The OpenAPI 3 document of the REST API, generated from the handlers' annotations and the
//! types they really (de)serialise (utoipa), served at `GET /api/v1/openapi.json`.

use axum::Json;
use utoipa::openapi::path::Operation;
use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
use utoipa::{Modify, OpenApi};

use super::{audit, bulk, configs, debug, discovery, events, ops, proxies};

#[derive(OpenApi)]
#[openapi(
    info(title = "Flotilla REST API", description = "Configure fleets of Envoy proxies: see docs/api.md."),
    paths(
        configs::create,
        configs::list,
        configs::get_one,
        configs::update,
        configs::delete,
        configs::validate,
        configs::apply,
        configs::history,
        configs::rollback,
        bulk::bulk,
        bulk::import,
        bulk::export,
        bulk::restore,
        bulk::validate,
        proxies::list,
        proxies::get_one,
        proxies::status,
        events::stream,
        debug::stats,
        debug::cluster,
        debug::snapshot,
        debug::config_dump,
        debug::reload,
        discovery::services,
        discovery::service,
        discovery::endpoints,
        discovery::endpoints_of,
        audit::list,
        audit::whoami,
        ops::health,
        ops::ready,
        ops::ready_leader,
        ops::metrics,
        openapi_json,
    ),
    components(schemas(configs::ValidateWith)),
    modifiers(&CommonRefusals)
)]
pub struct ApiDoc;

/// Refusals any operation can answer, added to each one's responses where it does not list them
/// itself: 400 (an undeclared or ill-typed query parameter, `api::query`), and on everything but
/// the open probes 401 (authentication on, no or bad credentials), 403 (RBAC) and 429 (a
/// namespace's request quota); 413 and 415 on operations that take a body.
struct CommonRefusals;

fn refusal(description: &str) -> utoipa::openapi::Response {
    let json = ContentBuilder::new().schema(Some(Ref::from_schema_name("ApiError"))).build();
    ResponseBuilder::new().description(description).content("application/json", json).build()
}

fn add(op: &mut Operation, status: &str, description: &str) {
    if !op.responses.responses.contains_key(status) {
        op.responses.responses.insert(status.to_string(), refusal(description).into());
    }
}

/// A query string or header cannot carry JSON `null`: an optional parameter is one that may be
/// left out, not one whose value may be null (`?apply=null` is refused as not a boolean).
fn not_null(p: &mut utoipa::openapi::path::Parameter) {
    use utoipa::openapi::RefOr;
    use utoipa::openapi::schema::{Schema, SchemaType, Type};
    if let Some(RefOr::T(Schema::Object(o))) = p.schema.as_mut()
        && let SchemaType::Array(types) = &o.schema_type
    {
        let kept: Vec<Type> = types.iter().filter(|t| **t != Type::Null).cloned().collect();
        if let [one] = kept.as_slice() {
            o.schema_type = SchemaType::Type(one.clone());
        }
    }
}

impl Modify for CommonRefusals {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        // Validating a stored config takes no body (the candidate is optional).
        if let Some(body) = doc
            .paths
            .paths
            .get_mut("/api/v1/configs/{id}/validate")
            .and_then(|i| i.post.as_mut())
            .and_then(|o| o.request_body.as_mut())
        {
            body.required = Some(utoipa::openapi::Required::False);
        }
        for (path, item) in doc.paths.paths.iter_mut() {
            let open = super::authn::is_open(path);
            let ops = [&mut item.get, &mut item.put, &mut item.post, &mut item.delete, &mut item.patch];
            for op in ops.into_iter().flatten() {
                for p in op.parameters.iter_mut().flatten() {
                    not_null(p);
                }
                add(op, "400", "An unknown query parameter, or one of the wrong type (named in the message)");
                if !open {
                    add(op, "401", "Authentication is on and the request has no valid credentials");
                    add(op, "403", "The caller may not do this (subject, verb, kind and namespace named)");
                    add(op, "429", "Over the namespace's request quota (`Retry-After` says when to retry)");
                }
                if op.request_body.is_some() {
                    add(op, "413", "Body over 4 MiB");
                    add(op, "415", "Content-Type is not JSON or YAML");
                }
            }
        }
    }
}

#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "operations", responses((status = 200, description = "This document")))]
pub async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
