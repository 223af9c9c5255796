//! Remote lists from a real list server through a real Envoy (changes, outage, ttl expiry,
//! onError, recovery, bad answers), dry-run rules, configurable deny replies, and policy reloads
//! under continuous load.

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::{Gateway, TempDir, http_agent, repo, wait_until};
use serde_json::json;

const CNN: &str = "edition.cnn.com";
const WAIT: Duration = Duration::from_secs(20);

fn remote_list_config(provider: serde_json::Value, dry_run: bool) -> String {
    json!({
        "lists": {"path-checker": {"value": "request.url_path", "entries": ["/health"], "provider": provider}},
        "rules": [{"name": "handle-cnn-access", "match": "request.host.endsWith(\".cnn.com\")",
                   "log": "info", "check": ["path-checker"], "dryRun": dry_run}],
        "log": {"fields": {"path": "request.path", "code": "response.code | 0",
                           "decision": "policy.decision", "deniedBy": "policy.deniedBy | \"\""}}
    })
    .to_string()
}

fn fetches(gateway: &Gateway, outcome: &str) -> u64 {
    gateway.metric(
        "list_fetches",
        &[("list", "path-checker"), ("result", outcome)],
    )
}

/// One VM fetches for the gateway and the others put its list in force at their next tick
/// (every `refreshInterval` here). The second good fetch from now was sent after the list
/// changed, and the fourth comes at least two intervals after it: by then every VM has ticked
/// and holds the current list.
fn wait_until_every_vm_fetched(gateway: &Gateway) {
    let successes = fetches(gateway, "success");
    wait_until("the current list in every VM", WAIT, || {
        fetches(gateway, "success") >= successes + 4
    });
}

#[test]
fn remote_list_follows_changes_outage_ttl_expiry_and_recovery() {
    let provider = json!({"cluster": "egress_policy_lists", "path": "/paths.txt", "refreshInterval": "100ms",
                          "ttl": "1500ms", "timeout": "500ms", "maxBytes": 200});
    let dir = TempDir::new("remote-list-config");
    let config = dir.path("remote.json");
    std::fs::write(&config, remote_list_config(provider, false)).unwrap();
    let mut gateway = Gateway::start_edited(&config, |yaml| yaml);
    gateway.lists.write("paths.txt", "# allowed\n/sport\n");
    wait_until("the first list", WAIT, || {
        gateway.status(CNN, "/sport") == 200
    });
    assert_eq!(gateway.status(CNN, "/politics"), 404);
    assert_eq!(gateway.status(CNN, "/health"), 200, "static entries");

    gateway
        .lists
        .write("paths.txt", "[\"/sport\", \"/politics\"]");
    wait_until("the changed list", WAIT, || {
        gateway.status(CNN, "/politics") == 200
    });
    wait_until_every_vm_fetched(&gateway);

    // Bad answers never replace the list in force.
    for bad in ["[\"/sport\", 3]", &"/x\n".repeat(100)] {
        let failures = fetches(&gateway, "failure");
        gateway.lists.write("paths.txt", bad);
        wait_until("a refused fetch", WAIT, || {
            fetches(&gateway, "failure") > failures
        });
        assert_eq!(
            gateway.status(CNN, "/politics"),
            200,
            "list in force kept after {bad:.20}"
        );
    }
    let failures = fetches(&gateway, "failure");
    std::fs::remove_file(gateway.lists.dir.join("paths.txt")).unwrap();
    wait_until("a 404 from the list server", WAIT, || {
        fetches(&gateway, "failure") > failures
    });
    gateway.lists.write("paths.txt", "/sport\n/politics\n");
    wait_until_every_vm_fetched(&gateway);

    // Outage: the last good list serves until ttl, then onError (deny) applies.
    gateway.lists.stop();
    let stopped = Instant::now();
    let failures = fetches(&gateway, "failure");
    wait_until("failed fetches", WAIT, || {
        fetches(&gateway, "failure") > failures
    });
    assert!(
        stopped.elapsed() < Duration::from_millis(1000),
        "the check below must run within ttl"
    );
    assert_eq!(
        gateway.status(CNN, "/politics"),
        200,
        "stale list served within ttl"
    );
    wait_until("ttl expiry", WAIT, || gateway.status(CNN, "/sport") == 404);
    assert!(
        stopped.elapsed() >= Duration::from_millis(1200),
        "expired after {:?}",
        stopped.elapsed()
    );
    assert_eq!(
        gateway.status(CNN, "/health"),
        200,
        "static entries still apply"
    );

    gateway.lists.restart();
    wait_until("recovery", WAIT, || gateway.status(CNN, "/sport") == 200);
    wait_until_every_vm_fetched(&gateway);
    assert_eq!(gateway.status(CNN, "/politics"), 200);
    assert!(
        gateway
            .envoy_stderr()
            .contains("egress-policy: list path-checker: fetch failed"),
        "failures are logged"
    );
    assert_eq!(
        gateway.metric("list_entries", &[("list", "path-checker")]),
        2
    );
}

/// Envoy runs a VM per worker and one on its main thread (three here); before lists were shared,
/// each fetched on its own, three requests per interval. Now the provider sees one per interval:
/// whatever the machine's speed, n good fetches take at least n − 2 intervals.
#[test]
fn a_gateway_fetches_a_list_once_per_interval_whatever_its_workers() {
    let provider = json!({"cluster": "egress_policy_lists", "path": "/paths.txt", "refreshInterval": "200ms",
                          "ttl": "10s", "timeout": "150ms"});
    // The list is there before the gateway starts: its first fetch is at once.
    let gateway = Gateway::with_config_and_lists(
        "shared-lists",
        &remote_list_config(provider, false),
        &[("paths.txt", "/sport\n")],
    );
    wait_until("a first good fetch", WAIT, || {
        fetches(&gateway, "success") >= 1
    });
    let (first, since) = (fetches(&gateway, "success"), Instant::now());
    wait_until("eight more good fetches", WAIT, || {
        fetches(&gateway, "success") >= first + 8
    });
    let elapsed = since.elapsed();
    assert!(
        elapsed >= Duration::from_millis(6 * 200),
        "8 fetches in {elapsed:?}: more than one fetch per interval"
    );
    // And every worker decides with it: requests on new connections, spread over the workers.
    for _ in 0..12 {
        assert_eq!(gateway.status(CNN, "/sport"), 200);
        assert_eq!(gateway.status(CNN, "/politics"), 404);
    }
    assert_eq!(
        fetches(&gateway, "failure"),
        0,
        "{}",
        gateway.envoy_stderr()
    );
}

/// Every answer a list server can give that is not a list: one byte over `maxBytes`, a body
/// that stalls after the headers, a connection closed mid-body, no answer at all, an empty 200,
/// a 500. Each is a counted, logged failed fetch; no VM dies, and the gateway keeps deciding
/// with the good list (before: the SDK panicked in `on_http_call_response` and every request got
/// 503 until another configuration was loaded).
#[test]
fn no_list_server_answer_can_take_the_gateway_down() {
    let provider = |name: &str, path: &str| {
        json!({"cluster": "egress_policy_lists", "path": path, "refreshInterval": "300ms",
               "ttl": "60s", "timeout": "700ms", "maxBytes": 64, "onError": "deny"})
        .as_object()
        .map(|p| (name.to_owned(), p.clone()))
        .unwrap()
    };
    let broken = [
        provider("oversized", "/big.txt"),
        provider("stalled", "/paths.txt?stall=1"),
        provider("cut-off", "/paths.txt?close=1"),
        provider("hanging", "/paths.txt?hang=1"),
        provider("empty", "/empty.txt"),
        provider("failing", "/paths.txt?status=500"),
    ];
    let mut lists = serde_json::Map::new();
    lists.insert(
        "good".into(),
        json!({"value": "request.url_path", "provider": provider("good", "/paths.txt").1}),
    );
    for (name, p) in &broken {
        // Dry run: a broken list is reported, the good one decides.
        lists.insert(
            name.clone(),
            json!({"value": "request.url_path", "provider": p, "dryRun": true}),
        );
    }
    let config = json!({
        "lists": lists,
        "rules": [{"name": "cnn", "match": "request.host.endsWith(\".cnn.com\")", "log": "info",
                   "check": ["good", "oversized", "stalled", "cut-off", "hanging", "empty", "failing"]}]
    });
    let big = format!("/sport\n/{}\n", "x".repeat(56));
    assert_eq!(big.len(), 65, "one byte over maxBytes");
    let mut gateway = Gateway::with_config_and_lists(
        "broken-lists",
        &config.to_string(),
        &[
            ("paths.txt", "/sport\n/health\n"),
            ("big.txt", &big),
            ("empty.txt", ""),
        ],
    );
    let failures =
        |list: &str| gateway.metric("list_fetches", &[("list", list), ("result", "failure")]);
    wait_until("two failed fetches of every broken list", WAIT, || {
        broken.iter().all(|(name, _)| failures(name) >= 2)
    });
    // One VM fetches for the gateway; the others put its list in force at their next tick.
    let good =
        |result: &str| gateway.metric("list_fetches", &[("list", "good"), ("result", result)]);
    wait_until("the good list in every VM", WAIT, || good("success") >= 4);
    assert_eq!(gateway.status(CNN, "/sport"), 200);
    assert_eq!(gateway.status(CNN, "/politics"), 404);
    let stderr = gateway.envoy_stderr();
    assert_eq!(
        good("failure"),
        0,
        "{}",
        stderr
            .lines()
            .filter(|l| l.contains("list good"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(gateway.is_running());
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!stderr.contains("RuntimeError"), "{stderr}");
    for (name, reason) in [
        ("oversized", "over maxBytes 64; not read"),
        ("stalled", "no response"),
        ("cut-off", "no response"),
        // Envoy answers a call that timed out before any header with its own 504.
        ("hanging", "status 504"),
        ("empty", "no entries"),
        ("failing", "status 500"),
    ] {
        let said = format!("list {name}: fetch failed (");
        assert!(
            stderr
                .lines()
                .any(|l| l.contains(&said) && l.contains(reason)),
            "{said}{reason} not in Envoy's log:\n{stderr}"
        );
    }
}

#[test]
fn on_error_decides_before_the_first_successful_fetch() {
    for (on_error, expected) in [("deny", 404), ("allow", 200)] {
        let provider = json!({"cluster": "egress_policy_lists", "path": "/missing.txt", "refreshInterval": "100ms", "onError": on_error});
        let gateway = Gateway::with_config(
            &format!("on-error-{on_error}"),
            &remote_list_config(provider, false),
        );
        wait_until("a failed fetch", WAIT, || fetches(&gateway, "failure") > 0);
        assert_eq!(
            gateway.status(CNN, "/sport"),
            expected,
            "onError {on_error}"
        );
        assert_eq!(
            gateway.status(CNN, "/health"),
            200,
            "static entries always apply"
        );
    }
}

#[test]
fn dry_run_rule_logs_and_counts_what_it_would_deny() {
    let provider =
        json!({"cluster": "egress_policy_lists", "path": "/paths.txt", "refreshInterval": "100ms"});
    let gateway = Gateway::with_config("dry-run", &remote_list_config(provider, true));
    gateway.lists.write("paths.txt", "/sport\n");
    wait_until_every_vm_fetched(&gateway);
    assert_eq!(
        gateway.status(CNN, "/politics"),
        200,
        "dry run never denies"
    );
    assert_eq!(gateway.status(CNN, "/sport"), 200);
    gateway.settle(2);
    let entries = gateway.log_entries_without_time();
    assert_eq!(entries.len(), 3, "{entries:?}");
    assert_eq!(entries[0]["level"], "warning");
    assert_eq!(
        entries[0]["wouldDeny"],
        "egress_policy_denied:rule=handle-cnn-access,list=path-checker"
    );
    assert_eq!(entries[0]["decision"], "dry_run_deny");
    assert_eq!(entries[1]["level"], "info");
    assert_eq!(entries[2]["path"], "/sport");
    assert!(entries[2].get("wouldDeny").is_none());
    // Counters reach Envoy on the filter's next tick.
    let labels = [("rule", "handle-cnn-access"), ("list", "path-checker")];
    wait_until("the dry-run counter", WAIT, || {
        gateway.metric("dry_run_denied", &labels) == 1
    });
    assert_eq!(gateway.upstream.paths(), ["/politics", "/sport"]);
}

#[test]
fn deny_replies_carry_the_configured_status_body_headers_and_deciding_rule() {
    let config = json!({
        "denyStatus": 403, "denyBody": "egress denied\n", "denyHeaders": {"x-egress-policy": "denied", "cache-control": "no-store"},
        "lists": {"paths": {"value": "request.url_path", "entries": ["/sport"]}},
        "rules": [
            {"name": "politics", "match": "request.url_path.startsWith(\"/politics\")", "check": ["paths"], "log": "error",
             "deny": {"status": 451, "body": "unavailable for legal reasons\n", "headers": {"x-egress-policy": "politics"}}},
            {"name": "rest", "check": ["paths"], "log": "info"}
        ],
        "log": {"fields": {"path": "request.path", "code": "response.code | 0", "deniedBy": "policy.deniedBy | \"\""}}
    });
    let gateway = Gateway::with_config("deny-replies", &config.to_string());
    let fetch = |path: &str| {
        let output = Command::new("curl")
            .args(["-s", "-i", "-H", "Host: edition.cnn.com"])
            .arg(format!("http://127.0.0.1:{}{path}", gateway.http_port))
            .output()
            .unwrap();
        String::from_utf8_lossy(&output.stdout).to_lowercase()
    };
    let politics = fetch("/politics");
    assert!(politics.starts_with("http/1.1 451"), "{politics}");
    assert!(
        politics.contains("x-egress-policy: politics\r\n")
            && politics.contains("cache-control: no-store\r\n")
    );
    assert!(
        politics.ends_with("\r\n\r\nunavailable for legal reasons\n"),
        "{politics}"
    );
    let health = fetch("/health");
    assert!(
        health.starts_with("http/1.1 403") && health.contains("x-egress-policy: denied\r\n"),
        "{health}"
    );
    assert!(health.ends_with("\r\n\r\negress denied\n"));
    gateway.settle(2);
    let entries = gateway.log_entries_without_time();
    assert_eq!(
        entries[0]["deniedBy"],
        "egress_policy_denied:rule=politics,list=paths"
    );
    assert_eq!(entries[0]["code"], 451);
    let access = gateway.access_log();
    assert_eq!(
        access[1]["details"],
        "egress_policy_denied:rule=rest,list=paths"
    );
    assert!(gateway.upstream.paths().is_empty());
}

/// A keep-alive HTTP/1.1 client (one pooled connection, reused while the gateway keeps it
/// open); returns the status or an error description. A response that closes the connection is
/// an error: a reload must drain nothing a client is using.
struct Client {
    agent: ureq::Agent,
    port: u16,
}

impl Client {
    fn connect(port: u16) -> Self {
        Client {
            agent: http_agent(Duration::from_secs(10)),
            port,
        }
    }

    fn get(&mut self, path: &str) -> Result<u16, String> {
        let mut response = self
            .agent
            .get(format!("http://127.0.0.1:{}{path}", self.port))
            .header("host", CNN)
            .call()
            .map_err(|e| e.to_string())?;
        response
            .body_mut()
            .read_to_vec()
            .map_err(|e| e.to_string())?;
        let closes = response
            .headers()
            .get("connection")
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
        if closes {
            return Err("server closed the connection".into());
        }
        Ok(response.status().as_u16())
    }
}

struct Sample {
    start: Instant,
    end: Instant,
    path: &'static str,
    result: Result<u16, String>,
}

/// 24 swaps between the list-check policy (politics 404) and the logging policy (politics 200) while two keep-alive clients send
/// requests without pause: no request fails or is reset, and every request that ran wholly
/// inside a phase got that phase's decision.
#[test]
fn reloads_under_load_drop_nothing_and_each_phase_follows_its_config() {
    let gateway = Gateway::example("s3-listcheck.json");
    let running = Arc::new(AtomicBool::new(true));
    let samples = Arc::new(Mutex::new(Vec::<Sample>::new()));
    let clients: Vec<_> = (0..2)
        .map(|_| {
            let (running, samples, port) = (running.clone(), samples.clone(), gateway.http_port);
            std::thread::spawn(move || {
                let mut client = Client::connect(port);
                let mut n = 0usize;
                while running.load(Ordering::SeqCst) {
                    let path = if n.is_multiple_of(2) {
                        "/politics"
                    } else {
                        "/sport"
                    };
                    n += 1;
                    let start = Instant::now();
                    let result = client.get(path);
                    let failed = result.is_err();
                    samples.lock().unwrap().push(Sample {
                        start,
                        end: Instant::now(),
                        path,
                        result,
                    });
                    if failed {
                        client = Client::connect(port);
                    }
                }
            })
        })
        .collect();
    let configs = [("s1-logging.json", 200), ("s3-listcheck.json", 404)];
    // (phase start: config applied, phase end: next swap begun, politics status in force)
    let mut phases = Vec::new();
    let mut applied = Instant::now();
    let mut politics = 404;
    for swap in 0..24 {
        std::thread::sleep(Duration::from_millis(30)); // load time inside the phase, not synchronisation
        let (config, next_politics) = configs[swap % 2];
        let begun = Instant::now();
        phases.push((applied, begun, politics));
        assert!(
            gateway.reload(&repo().join("envoy/examples").join(config)),
            "reload {swap} rejected"
        );
        applied = Instant::now();
        politics = next_politics;
    }
    std::thread::sleep(Duration::from_millis(30));
    phases.push((applied, Instant::now(), politics));
    running.store(false, Ordering::SeqCst);
    for client in clients {
        client.join().unwrap();
    }
    let samples = samples.lock().unwrap();
    let failures: Vec<&String> = samples
        .iter()
        .filter_map(|s| s.result.as_ref().err())
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} requests failed: {failures:?}",
        failures.len(),
        samples.len()
    );
    let mut checked = 0;
    if std::env::var_os("EGRESS_DEBUG").is_some() {
        let t0 = phases[0].0;
        for (a, b, p) in &phases {
            eprintln!(
                "phase {:?}..{:?} politics {p}",
                a.duration_since(t0),
                b.duration_since(t0)
            );
        }
        for s in samples.iter() {
            eprintln!(
                "{:?}..{:?} {} {:?}",
                s.start.duration_since(t0),
                s.end.duration_since(t0),
                s.path,
                s.result
            );
        }
    }
    for (start, end, politics) in &phases {
        for sample in samples
            .iter()
            .filter(|s| s.start >= *start && s.end <= *end)
        {
            let expected = if sample.path == "/politics" {
                *politics
            } else {
                200
            };
            assert_eq!(
                sample.result.as_ref().ok(),
                Some(&expected),
                "{} in a phase with politics {politics}",
                sample.path
            );
            checked += 1;
        }
    }
    assert!(
        samples.len() > 200 && checked > 100,
        "{} requests, {checked} inside phases",
        samples.len()
    );
    assert!(
        samples
            .iter()
            .all(|s| s.result.as_ref().is_ok_and(|c| *c == 200 || *c == 404))
    );
}
