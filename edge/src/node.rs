//! Which proxy group a node belongs to: `node.cluster` names the config, and
//! `node.metadata.namespace` (a string; missing means `default`) its namespace.

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::google::protobuf::value::Kind;
use flotilla_shared::Target;

/// The group `node` belongs to.
pub fn target_of(node: &Node) -> Target {
    let namespace = node
        .metadata
        .as_ref()
        .and_then(|m| m.fields.get("namespace"))
        .and_then(|v| match &v.kind {
            Some(Kind::StringValue(s)) => Some(s.clone()),
            _ => None,
        })
        .unwrap_or_default();
    Target::new(namespace, node.cluster.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::google::protobuf::{Struct, Value};

    #[test]
    fn namespace_from_metadata_or_default() {
        let mut node = Node { id: "n1".into(), cluster: "svc".into(), ..Default::default() };
        assert_eq!(target_of(&node), Target::new("default", "svc"));
        let md = Struct {
            fields: [("namespace".to_string(), Value { kind: Some(Kind::StringValue("prod".into())) })]
                .into(),
        };
        node.metadata = Some(md);
        assert_eq!(target_of(&node), Target::new("prod", "svc"));
    }
}
