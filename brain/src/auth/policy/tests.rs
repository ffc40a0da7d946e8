#![allow(clippy::unwrap_used)]

use std::path::Path;

use super::*;

fn who(sub: &str, groups: &[&str]) -> Principal {
    Principal {
        subject: sub.into(),
        groups: groups.iter().map(|g| g.to_string()).collect(),
        via: crate::auth::Via::Token,
    }
}

const POLICY: &str = r#"
roles:
  deployer: [{verbs: [get, list, apply], kinds: [configs]}]
bindings:
  - {role: editor, subjects: [alice], namespaces: [team-a]}
  - {role: viewer, groups: [auditors], namespaces: ["*"]}
  - {role: deployer, subjects: ["spiffe://example.org/ns/ci/sa/deploy"], namespaces: [team-b]}
  - {role: admin, subjects: [root], namespaces: ["*"]}
quotas:
  team-a: {configs: 2, requestsPerSecond: 5}
crossNamespace:
  - {from: team-a, to: team-b}
"#;

#[test]
fn roles_apply_in_their_namespaces_only() {
    let p = Policy::parse(POLICY.as_bytes(), Path::new("p.yaml")).unwrap();
    let alice = who("alice", &[]);
    assert!(p.allows(&alice, Verb::Update, Kind::Configs, "team-a"));
    assert!(!p.allows(&alice, Verb::Update, Kind::Configs, "team-b"));
    assert!(!p.allows(&alice, Verb::Get, Kind::Audit, "team-a"), "editors do not read the audit log");
    assert!(!p.allows(&alice, Verb::Export, Kind::Secrets, "team-a"), "editors do not export keys");
    assert!(p.sees(&alice, "team-a") && !p.sees(&alice, "team-b"));
    let auditor = who("bob", &["auditors"]);
    assert!(p.allows(&auditor, Verb::List, Kind::Configs, "anything"));
    assert!(!p.allows(&auditor, Verb::Create, Kind::Configs, "anything"));
    let ci = who("spiffe://example.org/ns/ci/sa/deploy", &[]);
    assert!(p.allows(&ci, Verb::Apply, Kind::Configs, "team-b"));
    assert!(!p.allows(&ci, Verb::Delete, Kind::Configs, "team-b"));
    assert!(p.allows(&who("root", &[]), Verb::Export, Kind::Secrets, "x"));
    assert!(!p.allows(&who("mallory", &[]), Verb::Get, Kind::Configs, "team-a"));
    assert_eq!(p.quota("team-a").and_then(|q| q.configs), Some(2));
    assert!(p.may_reference("team-a", "team-b") && !p.may_reference("team-b", "team-a"));
    assert!(p.may_reference("team-b", SHARED_NAMESPACE));
    let perms = p.permissions(&alice);
    assert!(perms["team-a"][&Kind::Configs].contains(&Verb::Apply));
}

#[test]
fn bad_files_are_refused_with_what_is_wrong() {
    let path = Path::new("rbac.yaml");
    let err = Policy::parse(b"bindings: [{role: owner, subjects: [a], namespaces: [x]}]", path).unwrap_err();
    assert!(err.to_string().contains("owner") && err.to_string().contains("bindings[0]"), "{err}");
    let err = Policy::parse(b"bindings: [{role: admin, subject: [a], namespaces: [x]}]", path).unwrap_err();
    assert!(err.to_string().contains("subject") && err.to_string().contains("rbac.yaml"), "{err}");
    let err = Policy::parse(b"roles: {admin: []}", path).unwrap_err();
    assert!(err.to_string().contains("built-in"), "{err}");
    let err = Policy::parse(b"roles: {x: [{verbs: [fly], kinds: [configs]}]}", path).unwrap_err();
    assert!(err.to_string().contains("fly"), "{err}");
    let err = Policy::parse(b"bindings: [{role: admin, namespaces: [x]}]", path).unwrap_err();
    assert!(err.to_string().contains("no subject"), "{err}");
    let err = Policy::parse(b"\x00\xff{{", path).unwrap_err();
    assert!(err.to_string().contains("rbac.yaml"), "{err}");
}

#[test]
fn a_bad_reload_keeps_the_previous_policy() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rbac.yaml");
    std::fs::write(&path, POLICY).unwrap();
    let r = PolicyReloader::new(path.clone()).unwrap();
    let reloads = r.reloads();
    std::fs::write(&path, "bindings: [{role: nope, subjects: [a], namespaces: [x]}]").unwrap();
    assert!(r.reload().is_err());
    assert!(r.current().allows(&who("alice", &[]), Verb::Update, Kind::Configs, "team-a"));
    assert!(!reloads.has_changed().unwrap(), "a refused policy is not a new one");
    std::fs::write(&path, "bindings: [{role: viewer, subjects: [alice], namespaces: [team-a]}]").unwrap();
    r.reload().unwrap();
    assert!(!r.current().allows(&who("alice", &[]), Verb::Update, Kind::Configs, "team-a"));
    assert!(
        reloads.has_changed().unwrap(),
        "a policy taken into force is signalled (grants are enforced again)"
    );
}

#[test]
fn only_a_change_of_cross_namespace_grants_counts_as_new_grants() {
    let path = Path::new("rbac.yaml");
    let grant = "crossNamespace:\n  - {from: web, to: shop}\n";
    let a = Policy::parse(format!("bindings: []\n{grant}").as_bytes(), path).unwrap();
    let b = Policy::parse(
        format!("bindings: [{{role: viewer, subjects: [alice], namespaces: [web]}}]\n{grant}").as_bytes(),
        path,
    )
    .unwrap();
    let none = Policy::parse(b"bindings: []\n", path).unwrap();
    assert!(a.same_grants(&b), "bindings changed, grants did not");
    assert!(!a.same_grants(&none), "the grant was taken away");
}
