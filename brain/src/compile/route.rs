//! ProxyConfig route configs → `envoy.config.route.v3.RouteConfiguration`: virtual hosts,
//! routes and the clusters they choose; what a route matches and its retry, hash and header
//! policies are compiled by `compile::routing`.

use envoy_types::pb::envoy::config::route::v3::{
    Route, RouteAction, RouteConfiguration, VirtualHost, WeightedCluster, route, route_action,
    weighted_cluster,
};
use envoy_types::pb::google::protobuf::{BoolValue, UInt32Value};
use flotilla_shared::{Resource, ResourceType};

use super::http_filters;
use super::routing::{self, header_lists};
use super::{CompileError, duration, lb_metadata, reference, resource};
use crate::model;

pub(super) fn compile(rc: &model::RouteConfig, path: &str) -> Result<Resource, CompileError> {
    let mut refs = Vec::new();
    let mut vhosts = Vec::new();
    for (j, vh) in rc.virtual_hosts.iter().enumerate() {
        let vpath = format!("{path}.virtualHosts[{j}]");
        let mut routes = Vec::new();
        for (k, r) in vh.routes.iter().enumerate() {
            let rpath = format!("{vpath}.routes[{k}]");
            let route = compile_route(r, &rpath, &mut refs)?;
            routes.push(super::with_envoy(route, r.envoy.as_ref(), &rpath)?);
        }
        let h = header_lists(vh.headers.as_ref());
        let vhost = VirtualHost {
            name: vh.name.clone(),
            domains: vh.domains.clone(),
            routes,
            retry_policy: vh
                .retry_policy
                .as_ref()
                .map(|p| routing::retry_policy(p, &format!("{vpath}.retryPolicy")))
                .transpose()?,
            request_headers_to_add: h.request_add,
            request_headers_to_remove: h.request_remove,
            response_headers_to_add: h.response_add,
            response_headers_to_remove: h.response_remove,
            typed_per_filter_config: http_filters::per_route(
                vh.filters.as_ref(),
                &format!("{vpath}.filters"),
            )?,
            rate_limits: super::auth_services::descriptors(&vh.rate_limits, &format!("{vpath}.rateLimits"))?,
            ..Default::default()
        };
        vhosts.push(super::with_envoy(vhost, vh.envoy.as_ref(), &vpath)?);
    }
    let h = header_lists(rc.headers.as_ref());
    let cfg = RouteConfiguration {
        name: rc.name.clone(),
        virtual_hosts: vhosts,
        request_headers_to_add: h.request_add,
        request_headers_to_remove: h.request_remove,
        response_headers_to_add: h.response_add,
        response_headers_to_remove: h.response_remove,
        ..Default::default()
    };
    Ok(resource(ResourceType::Route, &rc.name, &cfg, refs))
}

fn compile_route(
    r: &model::Route,
    rpath: &str,
    refs: &mut Vec<flotilla_shared::ResourceRef>,
) -> Result<Route, CompileError> {
    let h = header_lists(r.headers.as_ref());
    let action = match (&r.redirect, &r.direct_response) {
        (Some(redirect), None) => {
            route::Action::Redirect(routing::redirect(redirect, &format!("{rpath}.redirect"))?)
        }
        (None, Some(d)) => route::Action::DirectResponse(routing::direct_response(d)),
        (None, None) => route::Action::Route(route_action(&r.route, rpath, refs)?),
        (Some(_), Some(_)) => {
            return Err(CompileError::Invalid {
                path: rpath.to_string(),
                message: "set one of route, redirect, directResponse".into(),
            });
        }
    };
    Ok(Route {
        r#match: Some(routing::route_match(&r.match_, &format!("{rpath}.match"))?),
        action: Some(action),
        request_headers_to_add: h.request_add,
        request_headers_to_remove: h.request_remove,
        response_headers_to_add: h.response_add,
        response_headers_to_remove: h.response_remove,
        typed_per_filter_config: http_filters::per_route(r.filters.as_ref(), &format!("{rpath}.filters"))?,
        ..Default::default()
    })
}

fn route_action(
    a: &model::RouteAction,
    rpath: &str,
    refs: &mut Vec<flotilla_shared::ResourceRef>,
) -> Result<RouteAction, CompileError> {
    let cluster_specifier = match (&a.cluster, &a.weighted_clusters) {
        (Some(c), _) => {
            refs.push(reference(ResourceType::Cluster, c));
            route_action::ClusterSpecifier::Cluster(c.clone())
        }
        (None, Some(wcs)) => {
            let clusters = wcs
                .iter()
                .map(|w| {
                    refs.push(reference(ResourceType::Cluster, &w.name));
                    let h = header_lists(w.headers.as_ref());
                    weighted_cluster::ClusterWeight {
                        name: w.name.clone(),
                        weight: Some(UInt32Value { value: w.weight }),
                        request_headers_to_add: h.request_add,
                        request_headers_to_remove: h.request_remove,
                        response_headers_to_add: h.response_add,
                        response_headers_to_remove: h.response_remove,
                        metadata_match: lb_metadata(&w.metadata_match),
                        ..Default::default()
                    }
                })
                .collect();
            route_action::ClusterSpecifier::WeightedClusters(WeightedCluster {
                clusters,
                ..Default::default()
            })
        }
        (None, None) => {
            return Err(CompileError::Invalid {
                path: format!("{rpath}.route"),
                message: "no cluster".into(),
            });
        }
    };
    let timeout = a.timeout.as_deref().map(|t| duration(&format!("{rpath}.route.timeout"), t)).transpose()?;
    let idle_timeout =
        a.idle_timeout.as_deref().map(|t| duration(&format!("{rpath}.route.idleTimeout"), t)).transpose()?;
    let host_rewrite_specifier = match (&a.host_rewrite, a.auto_host_rewrite) {
        (Some(h), _) => Some(route_action::HostRewriteSpecifier::HostRewriteLiteral(h.clone())),
        (None, true) => Some(route_action::HostRewriteSpecifier::AutoHostRewrite(BoolValue { value: true })),
        (None, false) => None,
    };
    let request_mirror_policies = a
        .mirrors
        .iter()
        .map(|m| {
            refs.push(reference(ResourceType::Cluster, &m.cluster));
            routing::mirror(m)
        })
        .collect();
    Ok(RouteAction {
        cluster_specifier: Some(cluster_specifier),
        timeout,
        idle_timeout,
        prefix_rewrite: a.prefix_rewrite.clone().unwrap_or_default(),
        regex_rewrite: a.regex_rewrite.as_ref().map(routing::regex_rewrite),
        metadata_match: lb_metadata(&a.metadata_match),
        retry_policy: a
            .retry_policy
            .as_ref()
            .map(|p| routing::retry_policy(p, &format!("{rpath}.route.retryPolicy")))
            .transpose()?,
        hash_policy: routing::hash_policy(&a.hash_policy, &format!("{rpath}.route.hashPolicy"))?,
        host_rewrite_specifier,
        request_mirror_policies,
        rate_limits: super::auth_services::descriptors(&a.rate_limits, &format!("{rpath}.route.rateLimits"))?,
        ..Default::default()
    })
}
