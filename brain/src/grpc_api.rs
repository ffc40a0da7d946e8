//! The gRPC management API, `flotilla.v1.ControlPlaneService` (proto/), on `--grpc-api-addr`
//! (default :18001). A shape over [`crate::manage`], like the REST handlers: the same
//! operations, checks and audit entries, with refusals mapped to gRPC codes — INVALID_ARGUMENT
//! with one `google.rpc.BadRequest` field violation per problem, NOT_FOUND, ALREADY_EXISTS,
//! ABORTED, PERMISSION_DENIED, RESOURCE_EXHAUSTED.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use flotilla_proto::v1 as pb;
use flotilla_proto::v1::control_plane_service_server::ControlPlaneService;
use flotilla_shared::fleet::NackInfo;
use tonic::{Code, Request, Response, Status};
use tonic_types::{ErrorDetails, FieldViolation, StatusExt};

use crate::audit::AuditFilter;
use crate::manage::{Caller, ConfigRead, Deletion, Manager, OpError, ProxyView, WriteOptions, Written};
use crate::model::ProxyConfig;
use crate::parse::{Format, ParseError, parse_bundle, parse_config};
use crate::service::ServiceError;
use crate::store::{ConfigRecord, ListFilter, StoreError};

pub struct GrpcApi {
    manage: Arc<Manager>,
}

impl GrpcApi {
    pub fn new(manage: Arc<Manager>) -> GrpcApi {
        GrpcApi { manage }
    }

    /// The caller of a call: its principal (authenticated here), request id and author.
    async fn caller<T>(&self, req: &Request<T>) -> Result<Caller, Status> {
        let who = crate::auth::grpc::principal(&self.manage.authz, req).await?;
        let request_id =
            crate::auth::request_id(req.metadata().get("x-request-id").and_then(|v| v.to_str().ok()));
        let author = if who.via == crate::auth::Via::None {
            req.metadata()
                .get("x-flotilla-user")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("anonymous")
                .to_string()
        } else {
            who.subject.clone()
        };
        Ok(Caller { who, request_id, author, api: crate::auth::Api::Grpc, charge: Arc::default() })
    }
}

impl GrpcApi {
    /// Bulk and Import: the same write, applied by default only for Import.
    async fn bulk_write(
        &self,
        req: Request<pb::BulkRequest>,
        default_apply: bool,
    ) -> Result<Response<pb::BulkReply>, Status> {
        let c = self.caller(&req).await?;
        let r = req.into_inner();
        let cfgs = bundle(&r.document, r.format)?;
        let res = self
            .manage
            .bulk(
                &c,
                cfgs,
                WriteOptions {
                    apply: r.apply.unwrap_or(default_apply),
                    dry_run: r.dry_run,
                    validate_envoy: r.validate_envoy,
                },
            )
            .await?;
        Ok(Response::new(pb::BulkReply {
            dry_run: res.dry_run,
            applied: res.applied,
            results_json: json(&res.results),
        }))
    }
}

// === errors ===

/// An RFC 3339 time from request field `name`, refused as an invalid argument naming it.
fn time_field(name: &str, s: &str) -> Result<chrono::DateTime<chrono::Utc>, Status> {
    crate::parse::parse_time(name, s).map_err(|m| invalid(m.clone(), vec![FieldViolation::new(name, m)]))
}

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
        ServiceError::Ha(h) => Status::unavailable(h.to_string()),
        ServiceError::Render(_) => {
            tracing::error!(message = "cannot render configs", error = %e);
            Status::internal(e.to_string())
        }
        ServiceError::Store(s) => match s {
            StoreError::NotFound(_) => Status::not_found(s.to_string()),
            StoreError::NameTaken { .. } => Status::already_exists(s.to_string()),
            StoreError::Conflict { .. } => Status::aborted(s.to_string()),
            StoreError::Rename { .. } => {
                invalid(s.to_string(), vec![FieldViolation::new("metadata", s.to_string())])
            }
            StoreError::Backend(_) => {
                tracing::error!(message = "storage failure", error = %s);
                Status::unavailable(s.to_string())
            }
        },
    }
}

impl From<OpError> for Status {
    fn from(e: OpError) -> Status {
        match e {
            OpError::Parse(e) => parse_status(e),
            OpError::Service(e) => service_status(e),
            OpError::Denied(d) => d.into(),
            OpError::Reference(e) => Status::permission_denied(format!("{}: {}", e.path, e.message)),
            OpError::OverQuota(q) => Status::resource_exhausted(q.message),
            OpError::NotFound(m) => Status::not_found(m),
            OpError::BadRequest(m) => invalid(m.clone(), vec![FieldViolation::new("document", m)]),
            OpError::Internal(m) => Status::internal(m),
            OpError::Unavailable(m) => Status::unavailable(m),
        }
    }
}

// === shapes ===

fn format_of(format: i32) -> Format {
    match pb::Format::try_from(format) {
        Ok(pb::Format::Json) => Format::Json,
        _ => Format::Yaml,
    }
}

fn nonempty(doc: &str) -> Result<(), Status> {
    if doc.trim().is_empty() {
        return Err(invalid(
            "document is empty".into(),
            vec![FieldViolation::new("document", "send a ProxyConfig")],
        ));
    }
    Ok(())
}

fn document(doc: &str, format: i32) -> Result<ProxyConfig, Status> {
    nonempty(doc)?;
    parse_config(doc.as_bytes(), format_of(format)).map_err(parse_status)
}

fn bundle(doc: &str, format: i32) -> Result<Vec<ProxyConfig>, Status> {
    nonempty(doc)?;
    parse_bundle(doc.as_bytes(), format_of(format)).map_err(parse_status)
}

fn json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

fn time(t: DateTime<Utc>) -> String {
    t.to_rfc3339()
}

/// A record as the API shows it (`manage` has already redacted its private keys).
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
        created_at: time(rec.created_at),
        updated_at: time(rec.updated_at),
        document_json: if with_document { json(&rec.config) } else { String::new() },
        rendered_json: String::new(),
    }
}

fn written(w: Written) -> Response<pb::ConfigReply> {
    Response::new(match w {
        Written::Stored(rec) => {
            pb::ConfigReply { config: Some(config_msg(*rec, true)), ..Default::default() }
        }
        Written::Planned(plan) => {
            pb::ConfigReply { dry_run: true, plan_json: json(&plan), ..Default::default() }
        }
        Written::Deleted(_) => pb::ConfigReply { deleted: true, ..Default::default() },
    })
}

fn nack_msg(n: &NackInfo) -> pb::Nack {
    pb::Nack {
        version: n.version.clone(),
        error: n.error.clone(),
        resources: n.resources.clone(),
        at: time(n.at),
    }
}

fn proxy_msg(v: &ProxyView) -> pb::Proxy {
    let streams = v
        .streams
        .iter()
        .map(|s| pb::Stream {
            stream_id: s.stream_id,
            service: s.service.clone(),
            protocol: s.protocol.to_string(),
            edge: s.edge.clone(),
            connected_at: time(s.connected_at),
            types: s
                .types
                .iter()
                .map(|(t, st)| pb::TypeState {
                    r#type: t.to_string(),
                    last_sent_version: st.last_sent_version.clone().unwrap_or_default(),
                    acked_version: st.acked_version.clone().unwrap_or_default(),
                    pushes: st.pushes,
                    last_nack: st.last_nack.as_ref().map(nack_msg),
                })
                .collect(),
        })
        .collect();
    pb::Proxy {
        node_id: v.node_id.clone(),
        cluster: v.cluster.clone(),
        namespace: v.namespace.clone(),
        streams,
    }
}

// === service ===

/// A caller's live event stream as gRPC replies.
type EventReplies =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<pb::ProxyEventReply, Status>> + Send>>;

fn event_replies(events: crate::manage::CallerEvents) -> EventReplies {
    use crate::manage::EventItem;
    Box::pin(futures::stream::unfold(events, |mut events| async move {
        let reply = match events.next().await? {
            EventItem::Event(e) => {
                pb::ProxyEventReply { event_json: serde_json::to_string(&*e).unwrap_or_default(), dropped: 0 }
            }
            EventItem::Dropped(n) => pb::ProxyEventReply { event_json: String::new(), dropped: n },
        };
        Some((Ok(reply), events))
    }))
}

#[tonic::async_trait]
impl ControlPlaneService for GrpcApi {
    type StreamProxyEventsStream = EventReplies;

    async fn get_stats(&self, req: Request<pb::GetStatsRequest>) -> Result<Response<pb::DebugReply>, Status> {
        let c = self.caller(&req).await?;
        Ok(Response::new(pb::DebugReply { json: json(&self.manage.stats(&c).await?) }))
    }

    async fn get_cluster(
        &self,
        req: Request<pb::GetStatsRequest>,
    ) -> Result<Response<pb::DebugReply>, Status> {
        let c = self.caller(&req).await?;
        Ok(Response::new(pb::DebugReply { json: json(&self.manage.cluster(&c).await?) }))
    }

    async fn get_config_snapshot(
        &self,
        req: Request<pb::GetConfigRequest>,
    ) -> Result<Response<pb::DebugReply>, Status> {
        let c = self.caller(&req).await?;
        let id = req.into_inner().id;
        Ok(Response::new(pb::DebugReply { json: json(&self.manage.snapshot(&c, &id).await?) }))
    }

    async fn get_proxy_config_dump(
        &self,
        req: Request<pb::GetProxyRequest>,
    ) -> Result<Response<pb::DebugReply>, Status> {
        let c = self.caller(&req).await?;
        let node = req.into_inner().node_id;
        Ok(Response::new(pb::DebugReply { json: json(&self.manage.config_dump(&c, &node).await?) }))
    }

    async fn reload_proxy(
        &self,
        req: Request<pb::GetProxyRequest>,
    ) -> Result<Response<pb::DebugReply>, Status> {
        let c = self.caller(&req).await?;
        let node = req.into_inner().node_id;
        Ok(Response::new(pb::DebugReply { json: json(&self.manage.reload_proxy(&c, &node).await?) }))
    }

    async fn stream_proxy_events(
        &self,
        req: Request<pb::StreamProxyEventsRequest>,
    ) -> Result<Response<EventReplies>, Status> {
        let c = self.caller(&req).await?;
        let r = req.into_inner();
        let filter = crate::manage::EventFilter {
            namespace: Some(r.namespace).filter(|n| !n.is_empty()),
            node_id: Some(r.node_id).filter(|n| !n.is_empty()),
        };
        Ok(Response::new(event_replies(self.manage.proxy_events(&c, filter)?)))
    }

    async fn create_config(
        &self,
        req: Request<pb::CreateConfigRequest>,
    ) -> Result<Response<pb::ConfigReply>, Status> {
        let c = self.caller(&req).await?;
        let r = req.into_inner();
        let cfg = document(&r.document, r.format)?;
        Ok(written(
            self.manage
                .create(
                    &c,
                    cfg,
                    WriteOptions { apply: r.apply, dry_run: r.dry_run, validate_envoy: r.validate_envoy },
                )
                .await?,
        ))
    }

    async fn get_config(
        &self,
        req: Request<pb::GetConfigRequest>,
    ) -> Result<Response<pb::ConfigReply>, Status> {
        let c = self.caller(&req).await?;
        let r = req.into_inner();
        let ConfigRead { record, rendered, .. } = self.manage.get(&c, &r.id, r.rendered).await?;
        let mut msg = config_msg(record, true);
        msg.rendered_json = rendered.as_ref().map(json).unwrap_or_default();
        Ok(Response::new(pb::ConfigReply { config: Some(msg), ..Default::default() }))
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
        let recs = self.manage.list(&c, &filter).await?;
        Ok(Response::new(pb::ListConfigsReply {
            configs: recs.into_iter().map(|r| config_msg(r, false)).collect(),
        }))
    }

    async fn update_config(
        &self,
        req: Request<pb::UpdateConfigRequest>,
    ) -> Result<Response<pb::ConfigReply>, Status> {
        let c = self.caller(&req).await?;
        let r = req.into_inner();
        let cfg = document(&r.document, r.format)?;
        Ok(written(
            self.manage
                .update(
                    &c,
                    &r.id,
                    cfg,
                    r.expected_version,
                    WriteOptions { apply: r.apply, dry_run: r.dry_run, validate_envoy: r.validate_envoy },
                )
                .await?,
        ))
    }

    async fn delete_config(
        &self,
        req: Request<pb::DeleteConfigRequest>,
    ) -> Result<Response<pb::DeleteConfigReply>, Status> {
        let c = self.caller(&req).await?;
        let r = req.into_inner();
        Ok(Response::new(match self.manage.delete(&c, &r.id, r.apply).await? {
            Deletion::Done(id) => pb::DeleteConfigReply {
                deleted: true,
                pending: false,
                status: "deleted".into(),
                id: id.to_string(),
            },
            Deletion::Staged(rec) => pb::DeleteConfigReply {
                deleted: false,
                pending: true,
                status: "pending-delete".into(),
                id: rec.id.to_string(),
            },
        }))
    }

    async fn apply_config(
        &self,
        req: Request<pb::ApplyConfigRequest>,
    ) -> Result<Response<pb::ConfigReply>, Status> {
        let c = self.caller(&req).await?;
        let r = req.into_inner();
        Ok(written(self.manage.apply(&c, &r.id, r.dry_run, r.validate_envoy).await?))
    }

    async fn validate_config(
        &self,
        req: Request<pb::ValidateConfigRequest>,
    ) -> Result<Response<pb::ValidateConfigReply>, Status> {
        let c = self.caller(&req).await?;
        let r = req.into_inner();
        let v = if r.id.is_empty() {
            self.manage.validate_bundle(&c, &bundle(&r.document, r.format)?).await?
        } else {
            let candidate =
                if r.document.trim().is_empty() { None } else { Some(document(&r.document, r.format)?) };
            self.manage.validate(&c, &r.id, candidate).await?
        };
        let errors = v
            .errors
            .into_iter()
            .map(|e| pb::FieldError {
                path: e.path,
                message: e.message,
                value_json: e.value.map(|v| v.to_string()).unwrap_or_default(),
            })
            .collect();
        Ok(Response::new(pb::ValidateConfigReply { valid: v.valid, errors }))
    }

    async fn get_history(
        &self,
        req: Request<pb::GetHistoryRequest>,
    ) -> Result<Response<pb::GetHistoryReply>, Status> {
        let c = self.caller(&req).await?;
        let revisions = self
            .manage
            .history(&c, &req.into_inner().id)
            .await?
            .into_iter()
            .map(|r| pb::Revision {
                version: r.version,
                action: r.action,
                author: r.author,
                at: time(r.at),
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
        let c = self.caller(&req).await?;
        let r = req.into_inner();
        let rec = self.manage.rollback(&c, &r.id, r.version, r.apply.unwrap_or(true)).await?;
        Ok(written(Written::Stored(Box::new(rec))))
    }

    async fn list_proxies(
        &self,
        req: Request<pb::ListProxiesRequest>,
    ) -> Result<Response<pb::ListProxiesReply>, Status> {
        let c = self.caller(&req).await?;
        let proxies = self.manage.proxies(&c).iter().map(proxy_msg).collect();
        Ok(Response::new(pb::ListProxiesReply { proxies }))
    }

    async fn get_proxy(
        &self,
        req: Request<pb::GetProxyRequest>,
    ) -> Result<Response<pb::GetProxyReply>, Status> {
        let c = self.caller(&req).await?;
        let v = self.manage.proxy(&c, &req.into_inner().node_id)?;
        Ok(Response::new(pb::GetProxyReply {
            proxy: Some(proxy_msg(&v)),
            state: v.state.into(),
            edges: v.edges.clone(),
            last_nacks: v.last_nacks.iter().map(|(t, n)| (t.to_string(), nack_msg(n))).collect(),
        }))
    }

    async fn get_proxy_status(
        &self,
        req: Request<pb::GetProxyRequest>,
    ) -> Result<Response<pb::GetProxyStatusReply>, Status> {
        let c = self.caller(&req).await?;
        let s = self.manage.proxy_status(&c, &req.into_inner().node_id)?;
        let types = s
            .types
            .into_iter()
            .map(|(t, ts)| {
                let msg = pb::TypeStatus {
                    state: ts.state.into(),
                    acked_version: ts.acked_version.unwrap_or_default(),
                    last_sent_version: ts.last_sent_version.unwrap_or_default(),
                    last_nack: ts.last_nack.as_ref().map(nack_msg),
                };
                (t, msg)
            })
            .collect();
        Ok(Response::new(pb::GetProxyStatusReply {
            node_id: s.node_id,
            edges: s.edges,
            state: s.state.into(),
            types,
        }))
    }

    async fn bulk(&self, req: Request<pb::BulkRequest>) -> Result<Response<pb::BulkReply>, Status> {
        self.bulk_write(req, false).await
    }

    async fn import(&self, req: Request<pb::BulkRequest>) -> Result<Response<pb::BulkReply>, Status> {
        self.bulk_write(req, true).await
    }

    async fn restore(&self, req: Request<pb::RestoreRequest>) -> Result<Response<pb::BulkReply>, Status> {
        let c = self.caller(&req).await?;
        let r = req.into_inner();
        let at = time_field("at", &r.at)?;
        let namespace = Some(r.namespace).filter(|s| !s.is_empty());
        let res = self.manage.restore(&c, at, namespace, r.dry_run).await?;
        Ok(Response::new(pb::BulkReply {
            dry_run: res.dry_run,
            applied: res.applied,
            results_json: json(&res.results),
        }))
    }

    async fn export(&self, req: Request<pb::ExportRequest>) -> Result<Response<pb::ExportReply>, Status> {
        let c = self.caller(&req).await?;
        let r = req.into_inner();
        let namespace = Some(r.namespace).filter(|s| !s.is_empty());
        let bundle_yaml = self.manage.export(&c, namespace, r.include_secrets).await?;
        Ok(Response::new(pb::ExportReply { bundle_yaml }))
    }

    async fn list_audit(
        &self,
        req: Request<pb::ListAuditRequest>,
    ) -> Result<Response<pb::ListAuditReply>, Status> {
        let c = self.caller(&req).await?;
        let r = req.into_inner();
        let since = match r.since.as_str() {
            "" => None,
            s => Some(time_field("since", s)?),
        };
        let filter = AuditFilter {
            namespace: Some(r.namespace).filter(|s| !s.is_empty()),
            subject: Some(r.subject).filter(|s| !s.is_empty()),
            since,
            limit: if r.limit == 0 { 100 } else { r.limit as usize },
        };
        let entries = self.manage.audit_log(&c, filter).await?;
        Ok(Response::new(pb::ListAuditReply { entries_json: json(&entries) }))
    }

    async fn list_services(
        &self,
        req: Request<pb::ListServicesRequest>,
    ) -> Result<Response<pb::ListServicesReply>, Status> {
        let c = self.caller(&req).await?;
        let name = req.into_inner().name;
        let view = self.manage.services(&c, Some(name.as_str()).filter(|n| !n.is_empty())).await?;
        Ok(Response::new(pb::ListServicesReply { services_json: json(&view) }))
    }

    async fn list_endpoints(
        &self,
        req: Request<pb::ListEndpointsRequest>,
    ) -> Result<Response<pb::ListEndpointsReply>, Status> {
        let c = self.caller(&req).await?;
        let service = req.into_inner().service;
        let view = self.manage.endpoints(&c, Some(service.as_str()).filter(|n| !n.is_empty()))?;
        Ok(Response::new(pb::ListEndpointsReply { endpoints_json: json(&view) }))
    }

    async fn who_am_i(&self, req: Request<pb::WhoAmIRequest>) -> Result<Response<pb::WhoAmIReply>, Status> {
        let c = self.caller(&req).await?;
        let w = self.manage.whoami(&c);
        Ok(Response::new(pb::WhoAmIReply {
            subject: w.principal.subject,
            groups: w.principal.groups,
            via: w.principal.via.as_str().into(),
            authenticated: w.authenticated,
            permissions_json: json(&w.permissions),
        }))
    }
}
