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

use crate::audit::{Action, Audit, RevisionRef};
use crate::auth::quota::{OverQuota, QuotaError, Quotas, RequestCharge};
use crate::auth::{Authz, Kind, Principal, Verb, config_permissions, kind_of};
use crate::model::ProxyConfig;
use crate::parse::{Format, ParseError, parse_config};
use crate::service::{ConfigService, Planned, ServiceError};
use crate::store::{ConfigRecord, ListFilter, StoreError};

pub struct GrpcApi {
    service: Arc<ConfigService>,
    registry: Fleet,
    authz: Authz,
    audit: Audit,
    quotas: Quotas,
}

impl GrpcApi {
    pub fn new(
        service: Arc<ConfigService>,
        registry: Fleet,
        authz: Authz,
        audit: Audit,
        quotas: Quotas,
    ) -> GrpcApi {
        GrpcApi { service, registry, authz, audit, quotas }
    }
}

fn over_quota(q: OverQuota) -> Status {
    Status::resource_exhausted(q.message)
}

// === access ===

/// The caller of a call, with the id its audit entries carry.
struct Caller {
    who: Principal,
    request_id: String,
    author: String,
    charge: RequestCharge,
}

impl GrpcApi {
    async fn caller<T>(&self, req: &Request<T>) -> Result<Caller, Status> {
        let who = crate::auth::grpc::principal(&self.authz, req).await?;
        let request_id =
            crate::auth::request_id(req.metadata().get("x-request-id").and_then(|v| v.to_str().ok()));
        let author = if who.via == "none" { author(req) } else { who.subject.clone() };
        Ok(Caller { who, request_id, author, charge: RequestCharge::default() })
    }

    fn action<'a>(&self, c: &'a Caller, verb: Verb, kind: Kind, ns: &'a str, name: &'a str) -> Action<'a> {
        Action { who: &c.who, verb, kind, namespace: ns, name, request_id: &c.request_id, api: "grpc" }
    }

    /// PERMISSION_DENIED (audited) unless `c` may do `verb` on `kind` in `ns`.
    async fn authorize(
        &self,
        c: &Caller,
        verb: Verb,
        kind: Kind,
        ns: &str,
        name: &str,
    ) -> Result<(), Status> {
        if let Err(denied) = self.authz.check(&c.who, verb, kind, ns) {
            self.audit.record(self.action(c, verb, kind, ns, name), "denied".into(), None, None).await;
            return Err(denied.into());
        }
        self.quotas.request(&self.authz, ns, &c.charge).map_err(over_quota)
    }

    /// The `configs` and `resources` quotas, were `cfg` stored.
    async fn check_quota(&self, cfg: &ProxyConfig, replacing: bool) -> Result<(), Status> {
        match self.quotas.write(&self.authz, self.service.store(), cfg, replacing).await {
            Ok(()) => Ok(()),
            Err(QuotaError::Over(q)) => Err(over_quota(q)),
            Err(QuotaError::Store(e)) => Err(service_status(e.into())),
        }
    }

    async fn authorize_config(&self, c: &Caller, verb: Verb, cfg: &ProxyConfig) -> Result<(), Status> {
        let (ns, name) = (cfg.namespace(), cfg.metadata.name.as_str());
        for (verb, kind) in config_permissions(verb, cfg) {
            self.authorize(c, verb, kind, ns, name).await?;
        }
        match self.authz.forbidden_reference(cfg) {
            None => Ok(()),
            Some(e) => Err(Status::permission_denied(format!("{}: {}", e.path, e.message))),
        }
    }

    /// The record with `id` if the caller may see its namespace; NOT_FOUND either way otherwise.
    async fn load(&self, c: &Caller, id: &str) -> Result<ConfigRecord, Status> {
        let id = id_of(id)?;
        let rec = self.service.store().get(id).await.map_err(|e| service_status(e.into()))?;
        rec.filter(|r| self.authz.sees(&c.who, &r.namespace))
            .ok_or_else(|| Status::not_found(format!("no config with id {id}")))
    }

    #[allow(clippy::too_many_arguments)]
    async fn audited<T>(
        &self,
        c: &Caller,
        verb: Verb,
        kind: Kind,
        ns: &str,
        name: &str,
        before: Option<RevisionRef>,
        result: &Result<T, Status>,
        after: impl FnOnce(&T) -> Option<RevisionRef>,
    ) {
        let outcome = result.as_ref().map(after).map_err(|e| e.message());
        self.audit.finished(self.action(c, verb, kind, ns, name), before, outcome).await;
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

/// A config as JSON with its private keys redacted.
fn redacted_json(cfg: &ProxyConfig) -> String {
    let mut c = cfg.clone();
    crate::secrets::redact(&mut c);
    json(&c)
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
        document_json: if with_document { redacted_json(&rec.config) } else { String::new() },
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
        let c = self.caller(&req).await?;
        let r = req.into_inner();
        let cfg = document(&r.document, r.format)?;
        self.authorize_config(&c, Verb::Create, &cfg).await?;
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
        self.check_quota(&cfg, false).await?;
        let (kind, ns, name) = (kind_of(&cfg), cfg.namespace().to_string(), cfg.metadata.name.clone());
        let res = self.service.create(cfg, r.apply, &c.author).await.map_err(service_status);
        self.audited(&c, Verb::Create, kind, &ns, &name, None, &res, |r| Some(RevisionRef::of_record(r)))
            .await;
        Ok(reply(res?))
    }

    async fn get_config(
        &self,
        req: Request<pb::GetConfigRequest>,
    ) -> Result<Response<pb::ConfigReply>, Status> {
        let c = self.caller(&req).await?;
        let r = req.into_inner();
        let rec = self.load(&c, &r.id).await?;
        self.authorize(&c, Verb::Get, kind_of(&rec.config), &rec.namespace, &rec.name).await?;
        let rendered = if r.rendered {
            redacted_json(&self.service.render(&rec.config).await.map_err(service_status)?)
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
        let c = self.caller(&req).await?;
        let r = req.into_inner();
        let filter = ListFilter {
            namespace: Some(r.namespace).filter(|s| !s.is_empty()),
            name: Some(r.name).filter(|s| !s.is_empty()),
        };
        let recs = self.service.store().list(&filter).await.map_err(|e| service_status(e.into()))?;
        let recs = recs
            .into_iter()
            .filter(|r| self.authz.allows(&c.who, Verb::List, kind_of(&r.config), &r.namespace));
        Ok(Response::new(pb::ListConfigsReply { configs: recs.map(|r| config_msg(r, false)).collect() }))
    }

    async fn update_config(
        &self,
        req: Request<pb::UpdateConfigRequest>,
    ) -> Result<Response<pb::ConfigReply>, Status> {
        let c = self.caller(&req).await?;
        let r = req.into_inner();
        let current = self.load(&c, &r.id).await?;
        let kind = kind_of(&current.config);
        self.authorize(&c, Verb::Update, kind, &current.namespace, &current.name).await?;
        let cfg = document(&r.document, r.format)?;
        self.authorize_config(&c, Verb::Update, &cfg).await?;
        let cfg = crate::secrets::keep_redacted(cfg, &current.config);
        if r.dry_run {
            let plan = self.service.plan_one(&cfg, r.apply).await.map_err(service_status)?;
            return Ok(dry_run_reply(plan));
        }
        self.check_quota(&cfg, true).await?;
        let before = Some(RevisionRef::of_record(&current));
        let res = self
            .service
            .update(current.id, cfg, r.expected_version, r.apply, &c.author)
            .await
            .map_err(service_status);
        self.audited(&c, Verb::Update, kind, &current.namespace, &current.name, before, &res, |r| {
            Some(RevisionRef::of_record(r))
        })
        .await;
        Ok(reply(res?))
    }

    async fn delete_config(
        &self,
        req: Request<pb::DeleteConfigRequest>,
    ) -> Result<Response<pb::DeleteConfigReply>, Status> {
        let c = self.caller(&req).await?;
        let r = req.into_inner();
        let current = self.load(&c, &r.id).await?;
        let kind = kind_of(&current.config);
        self.authorize(&c, Verb::Delete, kind, &current.namespace, &current.name).await?;
        let before = Some(RevisionRef::of_record(&current));
        let res = self.service.delete(current.id, r.apply, &c.author).await.map_err(service_status);
        self.audited(&c, Verb::Delete, kind, &current.namespace, &current.name, before, &res, |r| {
            r.as_ref().map(RevisionRef::of_record)
        })
        .await;
        let rec = res?;
        Ok(Response::new(pb::DeleteConfigReply { deleted: rec.is_none(), pending: rec.is_some() }))
    }

    async fn apply_config(
        &self,
        req: Request<pb::ApplyConfigRequest>,
    ) -> Result<Response<pb::ConfigReply>, Status> {
        let c = self.caller(&req).await?;
        let current = self.load(&c, &req.into_inner().id).await?;
        let kind = kind_of(&current.config);
        self.authorize(&c, Verb::Apply, kind, &current.namespace, &current.name).await?;
        let before =
            current.applied_config.as_ref().zip(current.applied_version).map(|(c, v)| RevisionRef::of(v, c));
        let res = self.service.apply(current.id, &c.author).await.map_err(service_status);
        self.audited(&c, Verb::Apply, kind, &current.namespace, &current.name, before, &res, |r| {
            r.as_ref().map(RevisionRef::of_record)
        })
        .await;
        match res? {
            Some(rec) => Ok(reply(rec)),
            None => Ok(Response::new(pb::ConfigReply::default())),
        }
    }

    async fn validate_config(
        &self,
        req: Request<pb::ValidateConfigRequest>,
    ) -> Result<Response<pb::ValidateConfigReply>, Status> {
        let c = self.caller(&req).await?;
        let r = req.into_inner();
        let cfg = document(&r.document, r.format)?;
        self.authorize(&c, Verb::Get, kind_of(&cfg), cfg.namespace(), &cfg.metadata.name).await?;
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
        let c = self.caller(&req).await?;
        let rec = self.load(&c, &req.into_inner().id).await?;
        self.authorize(&c, Verb::Get, kind_of(&rec.config), &rec.namespace, &rec.name).await?;
        let revisions = self
            .service
            .history(rec.id)
            .await
            .map_err(service_status)?
            .into_iter()
            .map(|mut r| {
                crate::secrets::redact_diff(&mut r.diff);
                pb::Revision {
                    version: r.version,
                    action: r.action,
                    author: r.author,
                    at: r.at.to_rfc3339(),
                    document_json: redacted_json(&r.config),
                    diff_json: json(&r.diff),
                }
            })
            .collect();
        Ok(Response::new(pb::GetHistoryReply { revisions }))
    }

    async fn rollback_config(
        &self,
        req: Request<pb::RollbackConfigRequest>,
    ) -> Result<Response<pb::ConfigReply>, Status> {
        let c = self.caller(&req).await?;
        let r = req.into_inner();
        let current = self.load(&c, &r.id).await?;
        let kind = kind_of(&current.config);
        self.authorize(&c, Verb::Rollback, kind, &current.namespace, &current.name).await?;
        let before = Some(RevisionRef::of_record(&current));
        let res = self
            .service
            .rollback(current.id, r.version, r.apply.unwrap_or(true), &c.author)
            .await
            .map_err(service_status);
        self.audited(&c, Verb::Rollback, kind, &current.namespace, &current.name, before, &res, |r| {
            Some(RevisionRef::of_record(r))
        })
        .await;
        Ok(reply(res?))
    }

    async fn list_proxies(
        &self,
        req: Request<pb::ListProxiesRequest>,
    ) -> Result<Response<pb::ListProxiesReply>, Status> {
        let c = self.caller(&req).await?;
        let mut proxies: Vec<pb::Proxy> = Vec::new();
        for s in self.registry.streams() {
            if !self.authz.allows(&c.who, Verb::List, Kind::Proxies, &s.namespace) {
                continue;
            }
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
