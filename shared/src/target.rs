//! Which config a proxy gets: a ProxyConfig applies to every Envoy whose `node.cluster` equals the
//! config's `metadata.name` and whose `node.metadata.namespace` equals its `metadata.namespace`
//! (missing means `default`).

use serde::{Deserialize, Serialize};

/// The namespace used when a config or a node names none.
pub const DEFAULT_NAMESPACE: &str = "default";

/// The proxy group a config targets and a node belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Target {
    pub namespace: String,
    pub name: String,
}

impl Target {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        let namespace = namespace.into();
        Target {
            namespace: if namespace.is_empty() { DEFAULT_NAMESPACE.to_string() } else { namespace },
            name: name.into(),
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_namespace_means_default() {
        assert_eq!(Target::new("", "svc"), Target::new("default", "svc"));
        assert_eq!(Target::new("prod", "svc").to_string(), "prod/svc");
    }
}
