//! The gRPC management API, `flotilla.v1.ControlPlaneService` (proto/), on `--grpc-api-addr`
//! (default :18001). A thin shim over [`ConfigService`], like the REST handlers: the same
//! operations and refusals, mapped to gRPC codes — INVALID_ARGUMENT with one
//! `google.rpc.BadRequest` field violation per problem, NOT_FOUND, ALREADY_EXISTS, ABORTED.

use std::sync::Arc;

use crate::fleet::Fleet;
use flotilla_proto::v1 as pb;
use flotilla_proto::v1::control_plane_service_server::ControlPlaneService;
use tonic::{Code, Request, Response, Status};
use tonic_types::{ErrorDetails, FieldViolation, StatusExt};
use uuid::Uuid;

use crate::model::ProxyConfig;
use crate::parse::{Format, ParseError, parse_config};
use crate::service::{ConfigService, Planned, ServiceError};
use crate::store::{ConfigRecord, ListFilter, StoreError};

pub struct GrpcApi {
    service: Arc<ConfigService>,
    registry: Fleet,
}

impl GrpcApi {
    pub fn new(service: Arc<ConfigService>, registry: Fleet) -> GrpcApi {
        GrpcApi { service, registry }
    }
}

// === errors ===

fn invalid(message: String, violations: Vec<FieldViolation>) -> Status {
    Status::with_error_details(Code::InvalidArgument, message, ErrorDetails::with_bad_request(violations))
}

fn parse_status(e: ParseError) -> Status {
    let field = e.path.clone().unwrap_or_else(|| "document".into());
    invalid(format!("malformed document: {e}"), vec![FieldViolation::new(field, e.to_string())])
}

fn service_status(e: ServiceError) -> Status {
    match e {
        ServiceError::Invalid(errors) => {
            let summary =
                errors.iter().map(|e| format!("{}: {}", e.path, e.message)).collect::<Vec<_>>().join("; ");
            let violations = errors.into_iter().map(|e| FieldViolation::new(e.path, e.message)).collect();
            invalid(format!("config is invalid: {summary}"), violations)
        }
        ServiceError::NoRevision { .. } => Status::not_found(e.to_string()),
        ServiceError::Store(s) => match s {
            StoreError::NotFound(_) => Status::not_found(s.to_string()),
            StoreError::NameTaken { .. } => Status::already_exists(s.to_string()),
            StoreError::Conflict { .. } => Status::aborted(s.to_string()),
            StoreError::Rename { .. } => {
                invalid(s.to_string(), vec![FieldViolation::new("metadata", s.to_string())])
            }
            StoreError::Backend(_) => {
                tracing::error!(message = "storage failure", error = %s);
                Status::internal(s.to_string())
            }
        },
    }
}

fn id_of(id: &str) -> Result<Uuid, Status> {
    Uuid::parse_str(id).map_err(|_| Status::not_found(format!("no config with id {id:?} (ids are UUIDs)")))
}

fn document(doc: &str, format: i32) -> Result<ProxyConfig, Status> {
    let format = match pb::Format::try_from(format) {
        Ok(pb::Format::Json) => Format::Json,
        _ => Format::Yaml,
    };
    if doc.trim().is_empty() {
        return Err(invalid(
            "document is empty".into(),
            vec![FieldViolation::new("document", "send a ProxyConfig")],
        ));
    }
    parse_config(doc.as_bytes(), format).map_err(parse_status)
}

fn json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

fn config_msg(rec: ConfigRecord, with_document: bool) -> pb::Config {
    let status = match (rec.pending_delete, rec.applied_version) {
        (true, _) => "pending-delete",
        (false, Some(v)) if v == rec.version => "applied",
        (false, Some(_)) => "pending",
        (false, None) => "draft",
    };
    pb::Config {
        id: rec.id.to_string(),
        namespace: rec.namespace,
        name: rec.name,
        version: rec.version,
        applied_version: rec.applied_version,
        status: status.into(),
        created_at: rec.created_at.to_rfc3339(),
        updated_at: rec.updated_at.to_rfc3339(),
        document_json: if with_document { json(&rec.config) } else { String::new() },
        rendered_json: String::new(),
    }
}

fn reply(rec: ConfigRecord) -> Response<pb::ConfigReply> {
    Response::new(pb::ConfigReply {
        config: Some(config_msg(rec, true)),
        dry_run: false,
        plan_json: String::new(),
    })
}

fn dry_run_reply(plan: Planned) -> Response<pb::ConfigReply> {
    Response::new(pb::ConfigReply { config: None, dry_run: true, plan_json: json(&plan) })
}

fn author<T>(req: &Request<T>) -> String {
    req.metadata().get("x-flotilla-user").and_then(|v| v.to_str().ok()).unwrap_or("anonymous").to_string()
}

// === service ===

#[tonic::async_trait]
impl ControlPlaneService for GrpcApi {
    async fn create_config(
        &self,
        req: Request<pb::CreateConfigRequest>,
    ) -> Result<Response<pb::ConfigReply>, Status> {
        let who = author(&req);
        let r = req.into_inner();
        let cfg = document(&r.document, r.format)?;
        if r.dry_run {
            let plan = self.service.plan_one(&cfg, r.apply).await.map_err(service_status)?;
            if plan.id.is_some() {
                return Err(Status::already_exists(format!(
                    "a config named {}/{} already exists",
                    plan.namespace, plan.name
                )));
            }
            return Ok(dry_run_reply(plan));
        }
        let rec = self.service.create(cfg, r.apply, &who).await.map_err(service_status)?;
        Ok(reply(rec))
    }

    async fn get_config(
        &self,
        req: Request<pb::GetConfigRequest>,
    ) -> Result<Response<pb::ConfigReply>, Status> {
        let r = req.into_inner();
        let id = id_of(&r.id)?;
        let rec = self.service.store().get(id).await.map_err(|e| service_status(e.into()))?;
        let rec = rec.ok_or_else(|| Status::not_found(format!("no config with id {id}")))?;
        let rendered = if r.rendered {
            json(&self.service.render(&rec.config).await.map_err(service_status)?)
        } else {
            String::new()
        };
        let mut msg = config_msg(rec, true);
        msg.rendered_json = rendered;
        Ok(Response::new(pb::ConfigReply { config: Some(msg), dry_run: false, plan_json: String::new() }))
    }

    async fn list_configs(
        &self,
        req: Request<pb::ListConfigsRequest>,
    ) -> Result<Response<pb::ListConfigsReply>, Status> {
        let r = req.into_inner();
        let filter = ListFilter {
            namespace: Some(r.namespace).filter(|s| !s.is_empty()),
            name: Some(r.name).filter(|s| !s.is_empty()),
        };
        let recs = self.service.store().list(&filter).await.map_err(|e| service_status(e.into()))?;
        Ok(Response::new(pb::ListConfigsReply {
            configs: recs.into_iter().map(|r| config_msg(r, false)).collect(),
        }))
    }

    async fn update_config(
        &self,
        req: Request<pb::UpdateConfigRequest>,
    ) -> Result<Response<pb::ConfigReply>, Status> {
        let who = author(&req);
        let r = req.into_inner();
        let id = id_of(&r.id)?;
        let cfg = document(&r.document, r.format)?;
        if r.dry_run {
            let plan = self.service.plan_one(&cfg, r.apply).await.map_err(service_status)?;
            return Ok(dry_run_reply(plan));
        }
        let rec =
            self.service.update(id, cfg, r.expected_version, r.apply, &who).await.map_err(service_status)?;
        Ok(reply(rec))
    }

    async fn delete_config(
        &self,
        req: Request<pb::DeleteConfigRequest>,
    ) -> Result<Response<pb::DeleteConfigReply>, Status> {
        let who = author(&req);
        let r = req.into_inner();
        let rec = self.service.delete(id_of(&r.id)?, r.apply, &who).await.map_err(service_status)?;
        Ok(Response::new(pb::DeleteConfigReply { deleted: rec.is_none(), pending: rec.is_some() }))
    }

    async fn apply_config(
        &self,
        req: Request<pb::ApplyConfigRequest>,
    ) -> Result<Response<pb::ConfigReply>, Status> {
        let who = author(&req);
        let id = id_of(&req.into_inner().id)?;
        match self.service.apply(id, &who).await.map_err(service_status)? {
            Some(rec) => Ok(reply(rec)),
            None => Ok(Response::new(pb::ConfigReply::default())),
        }
    }

    async fn validate_config(
        &self,
        req: Request<pb::ValidateConfigRequest>,
    ) -> Result<Response<pb::ValidateConfigReply>, Status> {
        let r = req.into_inner();
        let cfg = document(&r.document, r.format)?;
        let errors = match self.service.check(&cfg).await {
            Ok(_) => Vec::new(),
            Err(ServiceError::Invalid(errs)) => errs,
            Err(e) => return Err(service_status(e)),
        };
        let errors: Vec<pb::FieldError> = errors
            .into_iter()
            .map(|e| pb::FieldError {
                path: e.path,
                message: e.message,
                value_json: e.value.map(|v| v.to_string()).unwrap_or_default(),
            })
            .collect();
        Ok(Response::new(pb::ValidateConfigReply { valid: errors.is_empty(), errors }))
    }

    async fn get_history(
        &self,
        req: Request<pb::GetHistoryRequest>,
    ) -> Result<Response<pb::GetHistoryReply>, Status> {
        let id = id_of(&req.into_inner().id)?;
        let revisions = self
            .service
            .history(id)
            .await
            .map_err(service_status)?
            .into_iter()
            .map(|r| pb::Revision {
                version: r.version,
                action: r.action,
                author: r.author,
                at: r.at.to_rfc3339(),
                document_json: json(&r.config),
                diff_json: json(&r.diff),
            })
            .collect();
        Ok(Response::new(pb::GetHistoryReply { revisions }))
    }

    async fn rollback_config(
        &self,
        req: Request<pb::RollbackConfigRequest>,
    ) -> Result<Response<pb::ConfigReply>, Status> {
        let who = author(&req);
        let r = req.into_inner();
        let rec = self
            .service
            .rollback(id_of(&r.id)?, r.version, r.apply.unwrap_or(true), &who)
            .await
            .map_err(service_status)?;
        Ok(reply(rec))
    }

    async fn list_proxies(
        &self,
        _req: Request<pb::ListProxiesRequest>,
    ) -> Result<Response<pb::ListProxiesReply>, Status> {
        let mut proxies: Vec<pb::Proxy> = Vec::new();
        for s in self.registry.streams() {
            let stream = pb::Stream {
                stream_id: s.stream_id,
                service: s.service.clone(),
                protocol: s.protocol.to_string(),
                edge: s.edge.clone(),
                connected_at: s.connected_at.to_rfc3339(),
                types: s
                    .types
                    .iter()
                    .map(|(t, st)| pb::TypeState {
                        r#type: t.to_string(),
                        last_sent_version: st.last_sent_version.clone().unwrap_or_default(),
                        acked_version: st.acked_version.clone().unwrap_or_default(),
                        pushes: st.pushes,
                        last_nack: st.last_nack.as_ref().map(|n| pb::Nack {
                            version: n.version.clone(),
                            error: n.error.clone(),
                            resources: n.resources.clone(),
                            at: n.at.to_rfc3339(),
                        }),
                    })
                    .collect(),
            };
            match proxies.iter_mut().find(|p| p.node_id == s.node_id) {
                Some(p) => p.streams.push(stream),
                None => proxies.push(pb::Proxy {
                    node_id: s.node_id,
                    cluster: s.cluster,
                    namespace: s.namespace,
                    streams: vec![stream],
                }),
            }
        }
        Ok(Response::new(pb::ListProxiesReply { proxies }))
    }
}
