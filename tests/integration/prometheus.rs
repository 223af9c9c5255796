//! The Grafana dashboard against a real Prometheus (Debian's package, started on loopback) that
//! scrapes a real gateway after the list-check and exemption policies' traffic: every query of every
//! panel returns the expected series and values (`tests/data/dashboard.json`).
//!
//! Twice: on the bundled gateway, and with the stats configuration an Istio egress gateway gets
//! from `manifests/egress-gateway-values.yaml`: what Istio's bootstrap writes for its
//! ProxyConfig (tag regexes, the stats it keeps), beside Istio's own extractors.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::{Gateway, Guard, TempDir, http_get, repo, wait_until};
use serde_json::{Value, json};

const CNN: &str = "edition.cnn.com";

fn query(port: u16, promql: &str) -> Vec<(BTreeMap<String, String>, f64)> {
    let encoded: String = promql
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    let (status, body) = http_get(port, &format!("/api/v1/query?query={encoded}")).unwrap();
    assert_eq!(status, 200, "{promql}: {body}");
    let body: Value = serde_json::from_str(&body).unwrap();
    body["data"]["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|series| {
            let labels = series["metric"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
                .collect();
            (
                labels,
                series["value"][1].as_str().unwrap().parse().unwrap(),
            )
        })
        .collect()
}

/// The `stats_config` Istio's bootstrap (its `envoy_bootstrap.json` template) gives a gateway
/// whose ProxyConfig is the one in `manifests/egress-gateway-values.yaml`: Istio's fixed tag
/// extractors, one `(<tag>=\.=(.*?);\.;)` per default and extra stat tag (older Istio
/// releases list the defaults first and do not remove duplicates, so neither does this), and
/// a stats matcher that keeps only the prefixes it is told to and its own.
/// The scrape job's `metric_relabel_configs` of README: Which build?, read from the README.
fn native_metric_relabelling() -> String {
    let readme = crate::support::manual_text();
    let start = readme
        .find("  metric_relabel_configs:")
        .expect("README: Which build? shows the relabelling");
    let block = &readme[start..];
    let end = block.find("```").unwrap();
    block[..end].to_owned()
}

fn istio_stats_config() -> Value {
    let (_, proxy_config) =
        crate::manifests::helm_values_and_proxy_config("manifests/egress-gateway-values.yaml");
    let istio_default_tags = [
        "reporter",
        "source_namespace",
        "source_workload",
        "source_workload_namespace",
        "source_principal",
        "source_app",
        "source_version",
        "source_cluster",
        "destination_namespace",
        "destination_workload",
        "destination_workload_namespace",
        "destination_principal",
        "destination_app",
        "destination_version",
        "destination_service",
        "destination_service_name",
        "destination_service_namespace",
        "destination_port",
        "destination_cluster",
        "request_protocol",
        "request_operation",
        "request_host",
        "response_flags",
        "grpc_response_status",
        "connection_security_policy",
        "source_canonical_service",
        "destination_canonical_service",
        "source_canonical_revision",
        "destination_canonical_revision",
    ];
    let extra_tags = proxy_config["extraStatTags"].as_array().unwrap();
    let tag = |name: &str, regex: &str| json!({"tag_name": name, "regex": regex});
    let mut tags = vec![
        tag(
            "cluster_name",
            r"^cluster\.((.+?(\..+?\.svc\.cluster\.local)?)\.)",
        ),
        tag("tcp_prefix", r"^tcp\.((.*?)\.)\w+?$"),
        tag("response_code", r"_rq(_(\d{3}))$"),
        tag("response_code_class", r"_rq(_(\dxx))$"),
    ];
    for name in istio_default_tags
        .iter()
        .copied()
        .chain(extra_tags.iter().map(|t| t.as_str().unwrap()))
    {
        tags.push(tag(name, &format!(r"({name}=\.=(.*?);\.;)")));
    }
    tags.extend([
        tag("cache", r"(cache\.(.+?)\.)"),
        tag("component", r"(component\.(.+?)\.)"),
        tag("tag", r"(tag\.(.+?);\.)"),
        tag("wasm_filter", r"(wasm_filter\.(.+?)\.)"),
    ]);
    let mut prefixes: Vec<Value> = proxy_config["proxyStatsMatcher"]["inclusionPrefixes"]
        .as_array()
        .unwrap()
        .clone();
    for istio_prefix in [
        "reporter=",
        "cluster_manager",
        "listener_manager",
        "server",
        "cluster.xds-grpc",
        "wasm",
        "component",
        "istio",
    ] {
        prefixes.push(json!(istio_prefix));
    }
    json!({
        "use_all_default_tags": false,
        "stats_tags": tags,
        "stats_matcher": {"inclusion_list": {"patterns":
            prefixes.iter().map(|p| json!({"prefix": p})).collect::<Vec<_>>()}},
    })
}

/// A real Prometheus on loopback scraping one gateway as job `egress-gateway`, the README's
/// relabelling applied, with `rule_files` loaded.
struct Prometheus {
    _process: Guard,
    _dir: TempDir,
    port: u16,
}

impl Prometheus {
    fn start(admin_port: u16, rule_files: &[&std::path::Path]) -> Self {
        let dir = TempDir::new("prometheus");
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let rules: Vec<String> = rule_files
            .iter()
            .map(|f| format!("'{}'", f.display()))
            .collect();
        let prometheus_config = dir.path("prometheus.yml");
        std::fs::write(
            &prometheus_config,
            format!(
                "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\nrule_files: [{}]\nscrape_configs:\n- job_name: egress-gateway\n  metrics_path: /stats/prometheus\n  static_configs: [{{targets: ['127.0.0.1:{}']}}]\n{}",
                rules.join(", "),
                admin_port,
                // The native build's families carry Envoy's `envoy_` prefix; the README's
                // relabelling gives the dashboard and the alerts the names they query, for both
                // builds.
                native_metric_relabelling()
            ),
        )
        .unwrap();
        let process = Guard(
            Command::new("prometheus")
                .arg(format!("--config.file={}", prometheus_config.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.path("data").display()
                ))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(dir.path("prometheus.log")).unwrap())
                .spawn()
                .expect("prometheus (scripts/setup installs Debian's package)"),
        );
        Prometheus {
            _process: process,
            _dir: dir,
            port,
        }
    }
}

/// The bundled gateway (`envoy/gateway.yaml`'s stats tags), as `scripts/run` serves it.
#[test]
fn every_dashboard_query_returns_the_expected_series_on_the_bundled_gateway() {
    dashboard_after_s3_and_s4_traffic(None);
}

/// The stats configuration an Istio egress gateway gets from its Helm values.
#[test]
fn every_dashboard_query_returns_the_expected_series_under_istios_stats_config() {
    dashboard_after_s3_and_s4_traffic(Some(istio_stats_config()));
}

/// The list-check and exemption policies' traffic through a gateway with `stats_config` (or the bundled
/// one), scraped by a real Prometheus, and every query of every panel of the dashboard.
fn dashboard_after_s3_and_s4_traffic(stats_config: Option<Value>) {
    // The exemption policy, plus a remote list every VM must fetch, so that the list panels have a series.
    let mut config: Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("envoy/examples/s4-exemption.json")).unwrap(),
    )
    .unwrap();
    config["lists"]["known-hosts"] = json!({"value": "request.host", "provider":
        {"cluster": "egress_policy_lists", "path": "/hosts.txt", "refreshInterval": "100ms"}});
    config["rules"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "known-hosts", "check": ["known-hosts"]}));
    let dir = TempDir::new("dashboard-config");
    let config_path = dir.path("dashboard.json");
    std::fs::write(&config_path, config.to_string()).unwrap();
    let gateway = Gateway::start_full(
        &config_path,
        |yaml| match stats_config {
            None => yaml,
            Some(stats_config) => {
                let mut envoy: Value = serde_saphyr::from_str(&yaml).unwrap();
                envoy["stats_config"] = stats_config;
                serde_json::to_string(&envoy).unwrap()
            }
        },
        &[("hosts.txt", "edition.cnn.com\n")],
    );
    let fetched = [("list", "known-hosts"), ("result", "success")];
    wait_until(
        "every VM to fetch the list",
        Duration::from_secs(20),
        || gateway.metric("list_fetches", &fetched) >= 9,
    );

    // the list-check policy's requests without identity, then the exemption policy's from ns/default and ns/politics over mTLS.
    let plain: Vec<u16> = ["/politics", "/sport", "/health"]
        .iter()
        .map(|p| gateway.status(CNN, p))
        .collect();
    assert_eq!(plain, [404, 200, 200]);
    for (cert, expected) in [
        ("default-sleep", [404, 200, 200]),
        ("politics-sleep", [200, 200, 200]),
    ] {
        let statuses: Vec<u16> = ["/politics", "/sport", "/health"]
            .iter()
            .map(|p| gateway.mtls_status(Some(cert), CNN, p, &[]))
            .collect();
        assert_eq!(statuses, expected, "{cert}");
    }
    // The filter hands its counts to Envoy on its next tick. (Istio's stats matcher keeps none
    // of Envoy's HTTP counters, so the filter's own are waited for.)
    wait_until("the request counters", Duration::from_secs(10), || {
        gateway.metric("requests", &[]) == 9
    });

    let prometheus = Prometheus::start(gateway.admin_port, &[]);
    let port = prometheus.port;
    wait_until(
        "Prometheus to scrape the gateway twice",
        Duration::from_secs(60),
        || {
            http_get(port, "/-/ready").is_some_and(|(s, _)| s == 200)
                && query(port, "count_over_time(egress_policy_requests[1m])")
                    .iter()
                    .any(|(_, n)| *n >= 2.0)
        },
    );

    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("manifests/grafana-dashboard.json")).unwrap(),
    )
    .unwrap();
    let expected: Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("tests/data/dashboard.json")).unwrap(),
    )
    .unwrap();
    let mut failures = Vec::new();
    let mut checked = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        let title = panel["title"].as_str().unwrap();
        let Some(want) = expected.get(title) else {
            failures.push(format!(
                "{title}: no expectation in tests/data/dashboard.json"
            ));
            continue;
        };
        for target in panel["targets"].as_array().unwrap() {
            let promql = target["expr"]
                .as_str()
                .unwrap()
                .replace("$__rate_interval", "1m");
            let got = query(port, &promql);
            checked += 1;
            let mut got_series: Vec<BTreeMap<String, String>> =
                got.iter().map(|(l, _)| l.clone()).collect();
            got_series.sort();
            let mut want_series: Vec<BTreeMap<String, String>> = want["series"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| {
                    s["labels"]
                        .as_object()
                        .unwrap()
                        .iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
                        .collect()
                })
                .collect();
            want_series.sort();
            if got_series != want_series {
                failures.push(format!(
                    "{title}: series {got_series:?}, expected {want_series:?}"
                ));
                continue;
            }
            for series in want["series"].as_array().unwrap() {
                let Some(value) = series.get("value").and_then(Value::as_f64) else {
                    continue; // a rate: its value depends on timing, its series do not
                };
                let labels: BTreeMap<String, String> = series["labels"]
                    .as_object()
                    .unwrap()
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
                    .collect();
                let actual = got.iter().find(|(l, _)| *l == labels).map(|(_, v)| *v);
                let close = actual.is_some_and(|a| {
                    (a - value).abs() < 1e-9 || (series["atLeast"] == true && a >= value)
                });
                if !close {
                    failures.push(format!(
                        "{title}: {labels:?} = {actual:?}, expected {value}"
                    ));
                }
            }
        }
    }
    assert!(checked >= 13, "{checked} queries");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The alerting rules (`manifests/prometheus-alerts.yaml`) in a real Prometheus scraping a real
/// gateway: every rule loads and evaluates without error on its series, every metric they name
/// is one the gateway exports, and the ones its traffic calls for fire: the logging policy lets
/// politics through (a violation), and a broken configuration is refused at a reload.
#[test]
fn the_alerts_load_evaluate_and_fire_on_a_real_gateway() {
    // Politics logged as error and let through (a violation), a path the remote list lacks
    // refused, the list fetched: every family the alerts name has a series.
    let config = json!({
        "lists": {"path-checker": {"value": "request.url_path", "entries": ["/health", "/politics"],
            "provider": {"cluster": "egress_policy_lists", "path": "/paths.txt",
                         "refreshInterval": "200ms", "ttl": "60s"}}},
        "rules": [
            {"name": "handle-politics", "log": "error",
             "match": "request.host.endsWith(\"cnn.com\") && request.path.startsWith(\"/politics\")"},
            {"name": "handle-cnn-access", "log": "info", "check": ["path-checker"],
             "match": "request.host.endsWith(\".cnn.com\")"}
        ]
    });
    let gateway =
        Gateway::with_config_and_lists("alerts", &config.to_string(), &[("paths.txt", "/sport\n")]);
    wait_until("the list", Duration::from_secs(20), || {
        gateway.status(CNN, "/sport") == 200
    });
    assert_eq!(gateway.status(CNN, "/politics"), 200);
    assert_eq!(gateway.status(CNN, "/elsewhere"), 404);
    let dir = TempDir::new("alerts");
    let bad = dir.path("bad.json");
    std::fs::write(
        &bad,
        r#"{"rules": [{"name": "r", "match": "request.host ==", "log": "info"}]}"#,
    )
    .unwrap();
    assert!(
        !gateway.reload(&bad),
        "Envoy refuses the broken configuration"
    );
    wait_until(
        "the violation, the refusal and the refused load counted",
        Duration::from_secs(10),
        || {
            let counts = (
                gateway.metric("violations", &[("rule", "handle-politics")]),
                gateway.metric("denied", &[("rule", "handle-cnn-access")]),
                gateway.metric("config_loads", &[("result", "failure")]),
            );
            // /sport is refused until the list loads: at least the one refusal.
            counts.0 == 1 && counts.1 >= 1 && counts.2 >= 1
        },
    );

    let (_, exported) = http_get(gateway.admin_port, "/stats/prometheus").unwrap();
    let exported: String = exported.replace(gateway.build.metric_family_prefix(), "");
    let rules_file = repo().join("manifests/prometheus-alerts.yaml");
    let rules: Value =
        serde_saphyr::from_str(&std::fs::read_to_string(&rules_file).unwrap()).unwrap();
    let families: Vec<&str> = exported
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .collect();
    let metric_name = regex::Regex::new(r#"\b((?:egress_policy|envoy)_[a-z_]+[a-z])\b"#).unwrap();
    let name_pattern = regex::Regex::new(r#"__name__=~"([^"]+)""#).unwrap();
    for rule in rules["groups"][0]["rules"].as_array().unwrap() {
        let expr = rule["expr"].as_str().unwrap();
        for name in metric_name.captures_iter(expr).map(|c| c[1].to_owned()) {
            assert!(
                families.contains(&name.as_str()),
                "{}: the gateway exports no {name}",
                rule["alert"]
            );
        }
        // The wasm VMs' own stats, by pattern: only the wasm build has them.
        for pattern in name_pattern.captures_iter(expr).map(|c| c[1].to_owned()) {
            let pattern = regex::Regex::new(&format!("^(?:{pattern})$")).unwrap();
            let matched = families.iter().filter(|f| pattern.is_match(f)).count();
            let expected = if gateway.build == crate::support::Build::Wasm {
                2
            } else {
                0
            };
            assert_eq!(
                matched, expected,
                "{}: {pattern} matches {matched} families",
                rule["alert"]
            );
        }
    }

    let prometheus = Prometheus::start(gateway.admin_port, &[&rules_file]);
    let firing = || -> Vec<String> {
        let Some((200, body)) = http_get(prometheus.port, "/api/v1/alerts") else {
            return Vec::new();
        };
        let body: Value = serde_json::from_str(&body).unwrap();
        body["data"]["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["state"] == "firing")
            .map(|a| a["labels"]["alertname"].as_str().unwrap().to_owned())
            .collect()
    };
    let fired =
        crate::support::try_wait_until("the two alerts to fire", Duration::from_secs(120), || {
            let firing = firing();
            Ok(firing.contains(&"EgressPolicyViolation".to_owned())
                && firing.contains(&"EgressPolicyConfigRefused".to_owned()))
        });
    if let Err(why) = fired {
        let alerts = http_get(prometheus.port, "/api/v1/alerts");
        let rules = http_get(prometheus.port, "/api/v1/rules");
        panic!("{why}\nalerts: {alerts:?}\nrules: {rules:?}");
    }
    let mut names = firing();
    names.sort();
    names.dedup();
    assert_eq!(
        names,
        ["EgressPolicyConfigRefused", "EgressPolicyViolation"]
    );
    let (_, body) = http_get(prometheus.port, "/api/v1/rules").unwrap();
    let body: Value = serde_json::from_str(&body).unwrap();
    let rules = body["data"]["groups"][0]["rules"].as_array().unwrap();
    assert_eq!(rules.len(), 7);
    for rule in rules {
        assert_eq!(rule["health"], "ok", "{rule}");
    }
}
