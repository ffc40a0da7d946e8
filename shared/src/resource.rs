//! The closed set of xDS resource types Flotilla serves, their type URLs, and the order in which
//! they must reach a proxy (make-before-break). Pure data, no I/O.

use serde::{Deserialize, Serialize};

/// An xDS resource type. The declaration order is the make-before-break order for additions:
/// clusters, then their endpoints, then listeners, then the route configurations listeners use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ResourceType {
    Cluster,
    Endpoint,
    Listener,
    Route,
    Secret,
}

impl ResourceType {
    /// Every type, in make-before-break order for additions (O1).
    pub const ALL: [ResourceType; 5] = [
        ResourceType::Cluster,
        ResourceType::Endpoint,
        ResourceType::Listener,
        ResourceType::Route,
        ResourceType::Secret,
    ];

    /// Number of types; used to size per-type arrays.
    pub const COUNT: usize = 5;

    pub const fn type_url(self) -> &'static str {
        match self {
            ResourceType::Cluster => "type.googleapis.com/envoy.config.cluster.v3.Cluster",
            ResourceType::Endpoint => "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment",
            ResourceType::Listener => "type.googleapis.com/envoy.config.listener.v3.Listener",
            ResourceType::Route => "type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
            ResourceType::Secret => "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret",
        }
    }

    pub fn from_type_url(url: &str) -> Option<ResourceType> {
        ResourceType::ALL.into_iter().find(|t| t.type_url() == url)
    }

    /// Short lowercase name used in metrics, logs and the REST API ("cds", "eds", ...).
    pub const fn short_name(self) -> &'static str {
        match self {
            ResourceType::Cluster => "cds",
            ResourceType::Endpoint => "eds",
            ResourceType::Listener => "lds",
            ResourceType::Route => "rds",
            ResourceType::Secret => "sds",
        }
    }

    /// Position in [`ResourceType::ALL`], for per-type arrays.
    pub const fn index(self) -> usize {
        self as usize
    }

    /// LDS and CDS are "state of the world" types: a client may subscribe to all of them (wildcard)
    /// and, in SotW, every response carries the complete set (W5, W6). The others are named.
    pub const fn supports_wildcard(self) -> bool {
        matches!(self, ResourceType::Cluster | ResourceType::Listener)
    }
}

impl std::fmt::Display for ResourceType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.short_name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_urls_round_trip() {
        for t in ResourceType::ALL {
            assert_eq!(ResourceType::from_type_url(t.type_url()), Some(t));
            assert_eq!(ResourceType::ALL[t.index()], t);
        }
        assert_eq!(ResourceType::from_type_url("type.googleapis.com/nope"), None);
    }

    #[test]
    fn order_is_make_before_break() {
        let pos = |t: ResourceType| ResourceType::ALL.iter().position(|x| *x == t);
        assert!(pos(ResourceType::Cluster) < pos(ResourceType::Endpoint));
        assert!(pos(ResourceType::Endpoint) < pos(ResourceType::Listener));
        assert!(pos(ResourceType::Listener) < pos(ResourceType::Route));
    }
}
