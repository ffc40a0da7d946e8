//! ProxyConfig route configs → `envoy.config.route.v3.RouteConfiguration`.

use envoy_types::pb::envoy::config::route::v3::{
    Route, RouteAction, RouteConfiguration, RouteMatch, VirtualHost, WeightedCluster, route, route_action,
    route_match, weighted_cluster,
};
use envoy_types::pb::google::protobuf::UInt32Value;
use flotilla_shared::{Resource, ResourceType};

use super::{CompileError, duration, reference, resource};
use crate::model;

pub(super) fn compile(rc: &model::RouteConfig, path: &str) -> Result<Resource, CompileError> {
    let mut refs = Vec::new();
    let mut vhosts = Vec::new();
    for (j, vh) in rc.virtual_hosts.iter().enumerate() {
        let mut routes = Vec::new();
        for (k, r) in vh.routes.iter().enumerate() {
            let rpath = format!("{path}.virtualHosts[{j}].routes[{k}]");
            let path_specifier = match (&r.match_.prefix, &r.match_.path) {
                (Some(p), _) => route_match::PathSpecifier::Prefix(p.clone()),
                (None, Some(p)) => route_match::PathSpecifier::Path(p.clone()),
                (None, None) => {
                    return Err(CompileError::Invalid {
                        path: format!("{rpath}.match"),
                        message: "no prefix or path".into(),
                    });
                }
            };
            let a = &r.route;
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
                            weighted_cluster::ClusterWeight {
                                name: w.name.clone(),
                                weight: Some(UInt32Value { value: w.weight }),
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
            let timeout =
                a.timeout.as_deref().map(|t| duration(&format!("{rpath}.route.timeout"), t)).transpose()?;
            routes.push(Route {
                r#match: Some(RouteMatch { path_specifier: Some(path_specifier), ..Default::default() }),
                action: Some(route::Action::Route(RouteAction {
                    cluster_specifier: Some(cluster_specifier),
                    timeout,
                    prefix_rewrite: a.prefix_rewrite.clone().unwrap_or_default(),
                    ..Default::default()
                })),
                ..Default::default()
            });
        }
        vhosts.push(VirtualHost {
            name: vh.name.clone(),
            domains: vh.domains.clone(),
            routes,
            ..Default::default()
        });
    }
    let cfg = RouteConfiguration { name: rc.name.clone(), virtual_hosts: vhosts, ..Default::default() };
    Ok(resource(ResourceType::Route, &rc.name, &cfg, refs))
}
