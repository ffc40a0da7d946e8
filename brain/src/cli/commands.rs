//! One function per `flotilla` command. Each returns the exit code or a [`CliError`].

use std::io::Read;
use std::path::Path;

use reqwest::Method;
use serde_json::{Value, json};

use crate::client::{CliError, Client};
use crate::output::print;
use crate::{AuthCommand, Cli, Command, Kind, Output};

const YAML: &str = "application/yaml";

/// How long `apply` waits without `--wait` for the proxies' first answers.
const SETTLE: std::time::Duration = std::time::Duration::from_secs(3);

/// Reads FILE, every *.yaml/*.yml/*.json in DIR (sorted), or stdin for `-`, as one YAML bundle.
/// Each file is parsed here first, so a malformed one is named with its line and column
/// (`file:line:column: …`) instead of a position in the joined bundle.
fn read_bundle(paths: &[String]) -> Result<String, CliError> {
    let mut docs = Vec::new();
    for p in paths {
        if p == "-" {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .map_err(|e| CliError::Usage(format!("reading stdin: {e}")))?;
            check_parses("<stdin>", &s)?;
            docs.push(s);
            continue;
        }
        let path = Path::new(p);
        let files = if path.is_dir() {
            let mut files: Vec<_> = std::fs::read_dir(path)
                .map_err(|e| CliError::Usage(format!("reading directory {p}: {e}")))?
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|f| f.extension().is_some_and(|x| x == "yaml" || x == "yml" || x == "json"))
                .collect();
            files.sort();
            files
        } else {
            vec![path.to_path_buf()]
        };
        for f in files {
            let text = std::fs::read_to_string(&f)
                .map_err(|e| CliError::Usage(format!("reading {}: {e}", f.display())))?;
            check_parses(&f.display().to_string(), &text)?;
            docs.push(text);
        }
    }
    if docs.iter().all(|d| d.trim().is_empty()) {
        return Err(CliError::Usage("no configs found in the given files".into()));
    }
    // JSON is YAML, so documents of either kind join into one YAML stream.
    Ok(docs.iter().map(|d| format!("---\n{}\n", d.trim_start_matches("---").trim())).collect())
}

/// Parses one file's documents as the server will; a failure names `file:line:column`.
fn check_parses(file: &str, text: &str) -> Result<(), CliError> {
    let format = if text.trim_start().starts_with(['{', '[']) {
        flotilla_brain::parse::Format::Json
    } else {
        flotilla_brain::parse::Format::Yaml
    };
    match flotilla_brain::parse::parse_bundle(text.as_bytes(), format) {
        Ok(_) => Ok(()),
        Err(e) => {
            let at = match (e.line, e.column) {
                (Some(l), Some(c)) => format!("{file}:{l}:{c}"),
                _ => file.to_string(),
            };
            let path = e.path.map(|p| format!("{p}: ")).unwrap_or_default();
            Err(CliError::Usage(format!("{at}: {path}{}", e.message)))
        }
    }
}

fn flag(b: bool) -> &'static str {
    if b { "true" } else { "false" }
}

/// Prints a bulk plan or result; returns whether anything changes.
fn print_results(results: &Value, dry_run: bool) -> bool {
    let mut changed = false;
    for r in results.as_array().into_iter().flatten() {
        let action = r["action"].as_str().unwrap_or("?");
        let who = format!("{}/{}", r["namespace"].as_str().unwrap_or("?"), r["name"].as_str().unwrap_or("?"));
        let verb = match (action, dry_run) {
            ("create", false) => "created",
            ("update", false) => "configured",
            ("restore", false) => "restored",
            ("delete", false) => "deleted",
            ("restore", true) => "would be restored",
            ("delete", true) => "would be deleted",
            ("unchanged", _) => "unchanged",
            ("create", true) => "would be created",
            (_, true) => "would be configured",
            _ => action,
        };
        let version = r["version"].as_u64().map(|v| format!(" (version {v})")).unwrap_or_default();
        println!("config {who} {verb}{}", if dry_run { String::new() } else { version });
        let changes = r["changes"].as_array().cloned().unwrap_or_default();
        let diff = r["diff"].as_array().cloned().unwrap_or_default();
        changed |= action != "unchanged" || !changes.is_empty();
        if dry_run {
            for d in diff {
                let from = d.get("from").map(|v| v.to_string()).unwrap_or_else(|| "(none)".into());
                let to = d.get("to").map(|v| v.to_string()).unwrap_or_else(|| "(none)".into());
                println!("  ~ {}: {from} -> {to}", d["path"].as_str().unwrap_or("?"));
            }
            for c in changes {
                let sign = match c["action"].as_str() {
                    Some("add") => "+",
                    Some("remove") => "-",
                    _ => "~",
                };
                println!(
                    "  {sign} {} {}",
                    c["type"].as_str().unwrap_or("?"),
                    c["name"].as_str().unwrap_or("?")
                );
            }
        }
    }
    changed
}

/// Every proxy, with the state the server derives (synced, stale, nacked).
async fn proxies(c: &Client) -> Result<Vec<Value>, CliError> {
    Ok(c.get("/api/v1/proxies").await?.as_array().cloned().unwrap_or_default())
}

const CONFIG_COLUMNS: &[(&str, &str)] = &[
    ("NAMESPACE", "/namespace"),
    ("NAME", "/name"),
    ("VERSION", "/version"),
    ("APPLIED", "/appliedVersion"),
    ("STATUS", "/status"),
    ("UPDATED", "/updatedAt"),
];

const PROXY_COLUMNS: &[(&str, &str)] = &[
    ("NODE", "/nodeId"),
    ("NAMESPACE", "/namespace"),
    ("CLUSTER", "/cluster"),
    ("EDGES", "/edges"),
    ("STATE", "/state"),
    ("CONNECTED", "/connectedAt"),
];

const SERVICE_COLUMNS: &[(&str, &str)] = &[
    ("SOURCE", "/source"),
    ("NAMESPACE", "/namespace"),
    ("NAME", "/name"),
    ("ENDPOINTS", "/endpoints"),
    ("HEALTHY", "/healthyEndpoints"),
    ("USED BY", "/usedBy"),
];

const SOURCE_COLUMNS: &[(&str, &str)] = &[
    ("SOURCE", "/name"),
    ("KIND", "/kind"),
    ("HEALTHY", "/healthy"),
    ("LAST SYNC", "/lastSync"),
    ("ERROR", "/error"),
];

const ENDPOINT_COLUMNS: &[(&str, &str)] = &[
    ("SERVICE", "/service"),
    ("ADDRESS", "/address"),
    ("PORT", "/port"),
    ("HEALTH", "/health"),
    ("ZONE", "/zone"),
    ("WEIGHT", "/weight"),
];

const AUDIT_COLUMNS: &[(&str, &str)] = &[
    ("AT", "/at"),
    ("SUBJECT", "/subject"),
    ("VERB", "/verb"),
    ("KIND", "/kind"),
    ("NAMESPACE", "/namespace"),
    ("NAME", "/name"),
    ("RESULT", "/result"),
    ("REQUEST", "/requestId"),
];

pub async fn run(cli: Cli) -> Result<i32, CliError> {
    let c = Client::new(&cli.server, cli.user, cli.token, cli.ca_cert.as_deref())?;
    match cli.command {
        Command::Apply { files, dry_run, no_apply, validate_envoy, wait } => {
            let bundle = read_bundle(&files)?;
            let mut query = vec![("apply", flag(!no_apply)), ("dryRun", flag(dry_run))];
            if validate_envoy {
                query.push(("validate", "envoy"));
            }
            let url = c.url("/api/v1/bulk", &query)?;
            let res = c.call_url(Method::POST, url, Some((YAML, bundle))).await?;
            print_results(&res["results"], dry_run);
            if dry_run || no_apply {
                return Ok(0);
            }
            let configs = res["results"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|r| Some((r["namespace"].as_str()?.to_string(), r["name"].as_str()?.to_string())))
                .collect();
            let outcome = crate::rollout::follow(&c, &configs, wait.unwrap_or(SETTLE)).await?;
            if wait.is_some() || outcome.nacked() > 0 {
                outcome.report();
            } else if outcome.pending() > 0 {
                println!(
                    "{} proxies have not answered yet; follow them with --wait or `flotilla get proxies`",
                    outcome.pending()
                );
            }
            if outcome.nacked() > 0 {
                eprintln!(
                    "error: {} proxies rejected what was applied (they keep their previous config)",
                    outcome.nacked()
                );
                return Ok(1);
            }
            if wait.is_some() && outcome.timed_out {
                eprintln!("error: the rollout did not finish in time: {} proxies pending", outcome.pending());
                return Ok(1);
            }
            Ok(0)
        }
        Command::Diff { files } => {
            let bundle = read_bundle(&files)?;
            let url = c.url("/api/v1/bulk", &[("apply", "true"), ("dryRun", "true")])?;
            let res = c.call_url(Method::POST, url, Some((YAML, bundle))).await?;
            Ok(if print_results(&res["results"], true) { 1 } else { 0 })
        }
        Command::Get { what: Kind::Configs, name, namespace, all_namespaces, output } => {
            let value = match name {
                Some(n) => {
                    let id = c.config_id(&namespace, &n).await?;
                    c.get(&format!("/api/v1/configs/{id}")).await?
                }
                None => {
                    let q: Vec<(&str, &str)> =
                        if all_namespaces { vec![] } else { vec![("namespace", namespace.as_str())] };
                    c.call_url(Method::GET, c.url("/api/v1/configs", &q)?, None).await?
                }
            };
            print(&value, output, CONFIG_COLUMNS);
            Ok(0)
        }
        Command::Get { what: Kind::Proxies, name, output, .. } => {
            let value = match name {
                Some(n) => c.get(&format!("/api/v1/proxies/{n}")).await?,
                None => Value::Array(proxies(&c).await?),
            };
            print(&value, output, PROXY_COLUMNS);
            Ok(0)
        }
        Command::Get { what: Kind::Services, name, output, .. } => {
            let path = name.map_or("/api/v1/services".to_string(), |n| format!("/api/v1/services/{n}"));
            let value = c.get(&path).await?;
            if output == Output::Table {
                print(&value["sources"], output, SOURCE_COLUMNS);
                println!();
                print(&value["services"], output, SERVICE_COLUMNS);
            } else {
                print(&value, output, &[]);
            }
            Ok(0)
        }
        Command::Get { what: Kind::Endpoints, name, output, .. } => {
            let path = name.map_or("/api/v1/endpoints".to_string(), |n| format!("/api/v1/endpoints/{n}"));
            let value = c.get(&path).await?;
            if output == Output::Table {
                // One row per endpoint, named by its service.
                let rows: Vec<Value> = value
                    .as_array()
                    .into_iter()
                    .flatten()
                    .flat_map(|svc| {
                        let name = svc["service"].clone();
                        svc["endpoints"].as_array().cloned().unwrap_or_default().into_iter().map(
                            move |mut e| {
                                e["service"] = name.clone();
                                e
                            },
                        )
                    })
                    .collect();
                print(&Value::Array(rows), output, ENDPOINT_COLUMNS);
            } else {
                print(&value, output, &[]);
            }
            Ok(0)
        }
        Command::Describe { what: Kind::Services | Kind::Endpoints, .. }
        | Command::Delete { what: Kind::Services | Kind::Endpoints, .. } => Err(CliError::Usage(
            "services and endpoints come from discovery sources: `flotilla get services|endpoints [NAME]`"
                .into(),
        )),
        Command::Describe { what: Kind::Configs, name, namespace } => {
            let id = c.config_id(&namespace, &name).await?;
            print(&c.get(&format!("/api/v1/configs/{id}")).await?, Output::Yaml, &[]);
            Ok(0)
        }
        Command::Describe { what: Kind::Proxies, name, .. } => {
            print(&c.get(&format!("/api/v1/proxies/{name}")).await?, Output::Yaml, &[]);
            Ok(0)
        }
        Command::Delete { what: Kind::Proxies, .. } => {
            Err(CliError::Usage("proxies cannot be deleted; delete the config that selects them".into()))
        }
        Command::Delete { what: Kind::Configs, name, namespace, stage } => {
            let id = c.config_id(&namespace, &name).await?;
            let url = c.url(&format!("/api/v1/configs/{id}"), &[("apply", flag(!stage))])?;
            let res = c.call_url(Method::DELETE, url, None).await?;
            if res["pending"].as_bool() == Some(true) {
                println!(
                    "config {namespace}/{name} staged for deletion (pending-delete): proxies keep it until \
                     `flotilla delete configs {name} -n {namespace}` is run without --stage"
                );
            } else {
                println!("config {namespace}/{name} deleted");
            }
            Ok(0)
        }
        Command::History { name, namespace, output } => {
            let id = c.config_id(&namespace, &name).await?;
            let mut h = c.get(&format!("/api/v1/configs/{id}/history")).await?;
            for r in h.as_array_mut().into_iter().flatten() {
                let n = r["diff"].as_array().map_or(0, Vec::len);
                r["changes"] = json!(n);
            }
            let cols = [
                ("VERSION", "/version"),
                ("ACTION", "/action"),
                ("AUTHOR", "/author"),
                ("AT", "/at"),
                ("CHANGES", "/changes"),
            ];
            print(&h, output, &cols);
            Ok(0)
        }
        Command::Rollback { name, namespace, to } => {
            let id = c.config_id(&namespace, &name).await?;
            let res = c
                .call(
                    Method::POST,
                    &format!("/api/v1/configs/{id}/rollback"),
                    Some(("application/json", json!({"version": to}).to_string())),
                )
                .await?;
            println!(
                "config {namespace}/{name} rolled back to revision {to}, now version {}",
                res["version"]
            );
            Ok(0)
        }
        Command::Validate { files } => {
            let bundle = read_bundle(&files)?;
            let res = c.call(Method::POST, "/api/v1/validate", Some((YAML, bundle))).await?;
            if res["valid"].as_bool() == Some(true) {
                println!("valid");
                Ok(0)
            } else {
                eprintln!("invalid:");
                for e in res["errors"].as_array().into_iter().flatten() {
                    let value = e
                        .get("value")
                        .filter(|v| !v.is_null())
                        .map(|v| format!(" (got {v})"))
                        .unwrap_or_default();
                    eprintln!(
                        "  {}: {}{value}",
                        e["path"].as_str().unwrap_or("?"),
                        e["message"].as_str().unwrap_or("?")
                    );
                }
                Ok(1)
            }
        }
        Command::Export { namespace, out, include_secrets } => {
            let mut q: Vec<(&str, &str)> =
                namespace.as_deref().map(|ns| vec![("namespace", ns)]).unwrap_or_default();
            if include_secrets {
                q.push(("includeSecrets", "true"));
            }
            let res = c.call_url(Method::GET, c.url("/api/v1/export", &q)?, None).await?;
            let text = res.as_str().unwrap_or_default().to_string();
            match out {
                Some(path) => std::fs::write(&path, text)
                    .map_err(|e| CliError::Usage(format!("writing {path}: {e}")))?,
                None => print!("{text}"),
            }
            Ok(0)
        }
        Command::Import { files, no_apply } => {
            let bundle = read_bundle(&files)?;
            let url = c.url("/api/v1/import", &[("apply", flag(!no_apply))])?;
            let res = c.call_url(Method::POST, url, Some((YAML, bundle))).await?;
            print_results(&res["results"], false);
            Ok(0)
        }
        Command::Restore { at, namespace, yes } => {
            let mut query = vec![("at", at.as_str()), ("dryRun", flag(!yes))];
            if let Some(ns) = &namespace {
                query.push(("namespace", ns.as_str()));
            }
            let url = c.url("/api/v1/restore", &query)?;
            let res = c.call_url(Method::POST, url, None).await?;
            let changed = print_results(&res["results"], !yes);
            match (changed, yes) {
                (false, _) => println!("nothing to restore: every config is as it was at {at}"),
                (true, false) => {
                    println!("dry run: nothing changed; run again with --yes to restore to {at}")
                }
                (true, true) => println!("restored to {at}"),
            }
            Ok(0)
        }
        Command::Status { output } => {
            let proxies = proxies(&c).await?;
            let configs = c.get("/api/v1/configs").await?;
            // The brains' topology needs `get` on proxies in every namespace; without it the
            // rest of the status still shows.
            let cluster = match c.get("/api/v1/cluster").await {
                Ok(v) => v,
                Err(CliError::Refused(why)) => json!({ "notShown": why }),
                Err(e) => return Err(e),
            };
            let count = |s: &str| proxies.iter().filter(|p| p["state"] == s).count();
            let summary = json!({
                "configs": configs.as_array().map_or(0, Vec::len),
                "proxies": {"connected": proxies.len(), "synced": count("synced"), "stale": count("stale"), "nacked": count("nacked"), "noConfig": count("no-config")},
                "cluster": cluster,
            });
            match output {
                Output::Table => {
                    if let Some(why) = cluster["notShown"].as_str() {
                        println!("brains:    not shown ({why})");
                    } else if cluster["ha"] == true {
                        let leader = &cluster["cluster"]["leader"];
                        println!(
                            "brains:    {} (leader {} at {}, epoch {})",
                            cluster["cluster"]["brains"].as_array().map_or(0, Vec::len),
                            leader["id"].as_str().unwrap_or("none elected"),
                            leader["url"].as_str().unwrap_or("-"),
                            leader["epoch"]
                        );
                        for b in cluster["cluster"]["brains"].as_array().into_iter().flatten() {
                            let id = b["id"].as_str().unwrap_or("?");
                            let role = if leader["id"].as_str() == Some(id) { "leader" } else { "follower" };
                            println!("  {id}  {}  {role}", b["url"].as_str().unwrap_or("?"));
                        }
                    } else {
                        println!("brains:    1 (no election; --ha runs several on one PostgreSQL)");
                    }
                    println!("configs:   {}", summary["configs"]);
                    println!(
                        "proxies:   {} connected, {} synced, {} stale, {} NACKing, {} without a config",
                        proxies.len(),
                        count("synced"),
                        count("stale"),
                        count("nacked"),
                        count("no-config")
                    );
                    for p in proxies.iter().filter(|p| p["state"] == "nacked") {
                        for (t, n) in p["lastNacks"].as_object().into_iter().flatten() {
                            println!(
                                "  {} rejects {t}: {}",
                                p["nodeId"].as_str().unwrap_or("?"),
                                n["error"].as_str().unwrap_or("?")
                            );
                        }
                    }
                }
                o => print(&summary, o, &[]),
            }
            Ok(0)
        }
        Command::Auth { command: AuthCommand::DevKeys { dir } } => crate::devtoken::keys(&dir),
        Command::Auth { command: AuthCommand::DevToken { subject, key, groups, issuer, audience, ttl } } => {
            crate::devtoken::token(&subject, &key, &groups, &issuer, &audience, ttl)
        }
        Command::Auth { command: AuthCommand::Whoami { output } } => {
            let me = c.get("/api/v1/auth/whoami").await?;
            match output {
                Output::Table => {
                    println!("subject:  {}", me["subject"].as_str().unwrap_or("?"));
                    println!("via:      {}", me["via"].as_str().unwrap_or("?"));
                    if let Some(g) = me["groups"].as_array().filter(|g| !g.is_empty()) {
                        let g: Vec<&str> = g.iter().filter_map(Value::as_str).collect();
                        println!("groups:   {}", g.join(", "));
                    }
                    if me["authenticated"] == false {
                        println!("(the server runs without authentication: everyone may do everything)");
                    }
                    println!("permissions:");
                    for (ns, kinds) in me["permissions"].as_object().into_iter().flatten() {
                        for (kind, verbs) in kinds.as_object().into_iter().flatten() {
                            let v: Vec<&str> =
                                verbs.as_array().into_iter().flatten().filter_map(Value::as_str).collect();
                            println!("  {ns:<16} {kind:<10} {}", v.join(", "));
                        }
                    }
                }
                o => print(&me, o, &[]),
            }
            Ok(0)
        }
        Command::Audit { namespace, subject, since, limit, output } => {
            let limit = limit.to_string();
            let mut q = vec![("limit", limit.as_str())];
            for (k, v) in [("namespace", &namespace), ("subject", &subject), ("since", &since)] {
                if let Some(v) = v {
                    q.push((k, v.as_str()));
                }
            }
            let entries = c.call_url(Method::GET, c.url("/api/v1/audit", &q)?, None).await?;
            print(&entries, output, AUDIT_COLUMNS);
            Ok(0)
        }
    }
}
