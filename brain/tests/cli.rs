//! The `flotilla` CLI against a real brain: apply (create, update, dry run), get, describe,
//! diff, history, rollback, validate, export/import round trip, delete, status, and the exit
//! codes scripts rely on.

#![allow(clippy::unwrap_used)] // test code: a panic is a failed test

use std::io::Write as _;
use std::process::{Command, Output, Stdio};

use flotilla_brain::app::Brain;
use flotilla_brain::settings::Settings;

const EXAMPLE: &str = include_str!("../../docs/examples/example-service.yaml");

async fn brain() -> (Brain, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let settings = Settings {
        rest_addr: "127.0.0.1:0".parse().unwrap(),
        xds_addr: "127.0.0.1:0".parse().unwrap(),
        grpc_api_addr: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.path().to_path_buf(),
        ..Settings::default()
    };
    (Brain::start(&settings).await.unwrap(), dir)
}

/// Runs `flotilla` (off the async runtime's threads) with `stdin`.
async fn flotilla(server: &str, args: &[&str], stdin: Option<&str>) -> Output {
    let (server, args, stdin) = (
        server.to_string(),
        args.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        stdin.map(str::to_string),
    );
    tokio::task::spawn_blocking(move || {
        let mut child = Command::new(env!("CARGO_BIN_EXE_flotilla"))
            .arg("--server")
            .arg(&server)
            .args(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        if let Some(s) = stdin {
            child.stdin.take().unwrap().write_all(s.as_bytes()).unwrap();
        }
        drop(child.stdin.take());
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap()
}

fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string()
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_end_to_end() {
    let (b, _dir) = brain().await;
    let server = format!("http://{}", b.rest_addr);
    let s = server.as_str();
    let files = tempfile::tempdir().unwrap();
    let f1 = files.path().join("example.yaml");
    std::fs::write(&f1, EXAMPLE).unwrap();
    let f1 = f1.to_str().unwrap();

    // apply: create, then unchanged.
    let o = flotilla(s, &["apply", "-f", f1], None).await;
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    assert!(out(&o).contains("config production/example-service created (version 1)"), "{}", out(&o));
    let o = flotilla(s, &["apply", "-f", f1], None).await;
    assert!(out(&o).contains("unchanged"), "{}", out(&o));

    // get (table and json), describe.
    let o = flotilla(s, &["get", "configs", "-n", "production"], None).await;
    assert!(out(&o).contains("example-service") && out(&o).contains("applied"), "{}", out(&o));
    let o = flotilla(s, &["get", "configs", "example-service", "-n", "production", "-o", "json"], None).await;
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["version"], 1);
    let o = flotilla(s, &["describe", "config", "example-service", "-n", "production"], None).await;
    assert!(out(&o).contains("proxies:"), "{}", out(&o));

    // diff and dry run of a change: exit 1 (differences), nothing stored.
    let changed = EXAMPLE.replace("port: 9001", "port: 9002");
    let o = flotilla(s, &["diff", "-f", "-"], Some(&changed)).await;
    assert_eq!(o.status.code(), Some(1), "{}{}", out(&o), err(&o));
    assert!(out(&o).contains("spec.clusters[0].endpoints[0].port: 9001 -> 9002"), "{}", out(&o));
    assert!(out(&o).contains("~ eds api_cluster"), "{}", out(&o));
    let o = flotilla(s, &["apply", "--dry-run", "-f", "-"], Some(&changed)).await;
    assert!(out(&o).contains("would be configured"), "{}", out(&o));
    let o = flotilla(s, &["diff", "-f", f1], None).await;
    assert_eq!(o.status.code(), Some(0), "no differences: {}", out(&o));

    // apply the change from stdin; history; rollback.
    let o = flotilla(s, &["apply", "-f", "-"], Some(&changed)).await;
    assert!(out(&o).contains("configured (version 2)"), "{}{}", out(&o), err(&o));
    let o = flotilla(s, &["history", "example-service", "-n", "production"], None).await;
    assert!(out(&o).lines().count() >= 3, "{}", out(&o));
    let o = flotilla(s, &["rollback", "example-service", "-n", "production", "--to", "1"], None).await;
    assert!(out(&o).contains("now version 3"), "{}{}", out(&o), err(&o));
    let o = flotilla(s, &["diff", "-f", f1], None).await;
    assert_eq!(o.status.code(), Some(0), "rolled back to the file's content: {}", out(&o));

    // validate: exit 1 and the path on stderr.
    let bad = EXAMPLE.replace("route: {cluster: api_cluster}", "route: {cluster: ghost}");
    let o = flotilla(s, &["validate", "-f", "-"], Some(&bad)).await;
    assert_eq!(o.status.code(), Some(1));
    assert!(err(&o).contains("spec.routes[0].virtualHosts[0].routes[0].route.cluster"), "{}", err(&o));
    let o = flotilla(s, &["validate", "-f", f1], None).await;
    assert_eq!(o.status.code(), Some(0));
    // apply of an invalid config: exit 1, the reason on stderr, nothing stored.
    let o = flotilla(s, &["apply", "-f", "-"], Some(&bad)).await;
    assert_eq!(o.status.code(), Some(1));
    assert!(err(&o).contains("ghost"), "{}", err(&o));

    // export → import into a second brain → export again: identical.
    let other = EXAMPLE.replace("example-service", "second").replace("production", "staging");
    flotilla(s, &["apply", "-f", "-"], Some(&other)).await;
    let exported = out(&flotilla(s, &["export"], None).await);
    assert!(exported.contains("name: second") && exported.contains("name: example-service"), "{exported}");
    let (b2, _dir2) = brain().await;
    let s2 = format!("http://{}", b2.rest_addr);
    let o = flotilla(&s2, &["import", "-f", "-"], Some(&exported)).await;
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    assert_eq!(
        out(&flotilla(&s2, &["export"], None).await),
        exported,
        "export → import → export is not exact"
    );
    let ns = out(&flotilla(s, &["export", "-n", "staging"], None).await);
    assert!(ns.contains("name: second") && !ns.contains("example-service"), "{ns}");

    // status, delete, not found.
    let o = flotilla(s, &["status"], None).await;
    assert!(out(&o).contains("configs:   2"), "{}", out(&o));
    // --stage only marks it pending-delete; a plain delete (the default) carries it out.
    let o = flotilla(s, &["delete", "config", "second", "-n", "staging", "--stage"], None).await;
    assert!(out(&o).contains("staged for deletion (pending-delete)"), "{}{}", out(&o), err(&o));
    let o = flotilla(s, &["get", "configs", "second", "-n", "staging", "-o", "json"], None).await;
    assert!(out(&o).contains("pending-delete"), "{}{}", out(&o), err(&o));
    let o = flotilla(s, &["delete", "config", "second", "-n", "staging"], None).await;
    assert!(out(&o).contains("deleted") && !out(&o).contains("staged"), "{}{}", out(&o), err(&o));
    let o = flotilla(s, &["get", "configs", "second", "-n", "staging"], None).await;
    assert_eq!(o.status.code(), Some(1));
    assert!(err(&o).contains("not found"), "{}", err(&o));

    // Usage errors exit 2; an unreachable server exits 3.
    let o = flotilla(s, &["apply", "-f", "/no/such/file.yaml"], None).await;
    assert_eq!(o.status.code(), Some(2), "{}", err(&o));
    let o = flotilla("http://127.0.0.1:1", &["status"], None).await;
    assert_eq!(o.status.code(), Some(3), "{}", err(&o));
    assert!(err(&o).contains("cannot reach"), "{}", err(&o));

    b.shutdown().await;
    b2.shutdown().await;
}

/// A bulk apply is atomic: one invalid config in the set stores none of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_of_several_is_all_or_nothing() {
    let (b, _dir) = brain().await;
    let s = format!("http://{}", b.rest_addr);
    let good = EXAMPLE.replace("example-service", "good");
    let bad = EXAMPLE.replace("example-service", "bad").replace("port: 8080", "port: 0");
    let o = flotilla(&s, &["apply", "-f", "-"], Some(&format!("{good}\n---\n{bad}"))).await;
    assert_eq!(o.status.code(), Some(1));
    assert!(err(&o).contains("[1].spec.listeners[0].port"), "{}", err(&o));
    let o = flotilla(&s, &["get", "configs", "-A", "-o", "json"], None).await;
    assert_eq!(out(&o).trim(), "[]");
    b.shutdown().await;
}

/// `flotilla get services|endpoints`: what discovery found, as tables and as JSON.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_services_and_endpoints() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("services.yaml");
    std::fs::write(
        &file,
        "services:\n  - name: payments\n    namespace: shop\n    endpoints:\n      - {address: 10.0.0.7, port: 8080, zone: z1}\n      - {address: 10.0.0.8, port: 8080, health: draining}\n",
    )
    .unwrap();
    let settings = Settings {
        rest_addr: "127.0.0.1:0".parse().unwrap(),
        xds_addr: "127.0.0.1:0".parse().unwrap(),
        grpc_api_addr: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.path().join("data"),
        discovery_files: vec![("local".into(), file)],
        ..Settings::default()
    };
    let b = Brain::start(&settings).await.unwrap();
    let s = format!("http://{}", b.rest_addr);
    let o = flotilla(&s, &["get", "services"], None).await;
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    let table = out(&o);
    assert!(table.contains("SOURCE") && table.contains("local") && table.contains("payments"), "{table}");
    let o = flotilla(&s, &["get", "endpoints", "payments"], None).await;
    let table = out(&o);
    assert!(table.contains("10.0.0.7") && table.contains("draining") && table.contains("z1"), "{table}");
    let o = flotilla(&s, &["get", "svc", "payments", "-o", "json"], None).await;
    let v: serde_json::Value = serde_json::from_str(&out(&o)).unwrap();
    assert_eq!(v["services"][0]["healthyEndpoints"], 1, "{v}");
    let o = flotilla(&s, &["get", "services", "ghost"], None).await;
    assert_eq!(o.status.code(), Some(1), "{}", err(&o));
    b.shutdown().await;
}

/// Issue 26 (the CLI a user follows first): a malformed file is named with its line and column;
/// `validate` and `apply --dry-run` agree on the same bundle (a config extending a template the
/// bundle brings, then a name given twice); an unreachable server is named with the cause.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_name_their_place_and_validate_agrees_with_a_dry_run() {
    let (b, dir) = brain().await;
    let s = format!("http://{}", b.rest_addr);
    let file = dir.path().join("broken.yaml");
    std::fs::write(&file, "apiVersion: v1\nkind: ProxyConfig\nmetadata: {name: x\nspec: {}\n").unwrap();
    let f = file.display().to_string();
    for cmd in ["apply", "validate", "diff"] {
        let o = flotilla(&s, &[cmd, "-f", &f], None).await;
        assert_eq!(o.status.code(), Some(2), "{cmd}: {}", err(&o));
        assert!(err(&o).contains(&format!("{f}:4:")), "{cmd} names file:line:column: {}", err(&o));
    }
    let typo = dir.path().join("typo.yaml");
    std::fs::write(&typo, EXAMPLE.replace("loadBalancingPolicy", "loadBalancingPolicyy")).unwrap();
    let o = flotilla(&s, &["apply", "-f", &typo.display().to_string()], None).await;
    assert_eq!(o.status.code(), Some(2));
    assert!(err(&o).contains("typo.yaml:") && err(&o).contains("loadBalancingPolicyy"), "{}", err(&o));

    let template = "apiVersion: v1\nkind: ProxyTemplate\nmetadata: {name: base, namespace: default}\nspec:\n  clusters:\n    - {name: shared, type: STATIC, endpoints: [{address: 127.0.0.1, port: 9001}]}\n";
    let user = "apiVersion: v1\nkind: ProxyConfig\nmetadata: {name: user, namespace: default}\nspec:\n  extends: [default/base]\n";
    for (bundle, valid) in [(format!("{template}---\n{user}"), true), (format!("{user}---\n{user}"), false)] {
        let v = flotilla(&s, &["validate", "-f", "-"], Some(&bundle)).await;
        let d = flotilla(&s, &["apply", "--dry-run", "-f", "-"], Some(&bundle)).await;
        assert_eq!(v.status.code(), Some(if valid { 0 } else { 1 }), "validate: {}{}", out(&v), err(&v));
        assert_eq!(d.status.code(), v.status.code(), "dry run disagrees: {}{}", out(&d), err(&d));
    }

    let closed = format!("http://127.0.0.1:{}", {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    });
    let o = flotilla(&closed, &["get", "configs"], None).await;
    assert_eq!(o.status.code(), Some(3));
    assert!(err(&o).contains("connection refused"), "{}", err(&o));
    b.shutdown().await;
}
