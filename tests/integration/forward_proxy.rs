//! The gateway for any allowed destination (README: HTTPS egress, Security), in a real Envoy
//! with `envoy/examples/forward-proxy.json`: the forward proxy for `HTTPS_PROXY` clients (curl,
//! Python, OpenSSL), absolute-form HTTP, the passthrough listener by SNI, every host reached
//! through the dynamic forward proxy and the gateway's one DNS cache, and the SSRF guard on all
//! of them. Everything stays on loopback: the test DNS answers loopback addresses only, the
//! stand-ins are on 127.0.0.1 (the guard's one exception here) and the refused address is
//! 127.0.0.2, where a canary counts the connections the guard must prevent.

use std::process::{Command, Stdio};

use serde_json::{Value, json};

use crate::support::{
    Gateway, IMPOSTOR, STARTUP_TIMEOUT, certs, default_names, raw_request, repo, wait_until,
};

fn gateway() -> Gateway {
    Gateway::start(&repo().join("envoy/examples/forward-proxy.json"))
}

/// curl through the forward proxy (plain, or over mTLS with the test certificate `identity`):
/// the CONNECT's status (0 for absolute-form) and the request's.
fn curl_through(gateway: &Gateway, identity: Option<&str>, url: &str) -> (u16, u16) {
    let certs = certs();
    let mut command = Command::new("curl");
    command
        .args(["-s", "-o", "/dev/null", "-m", "10"])
        .args(["-w", "%{http_connect} %{http_code}"])
        .arg("--cacert")
        .arg(certs.join("ca.crt"));
    match identity {
        None => {
            command.args([
                "--proxy",
                &format!("http://127.0.0.1:{}", gateway.proxy_port),
            ]);
        }
        Some(name) => {
            command
                .args([
                    "--proxy",
                    &format!("https://127.0.0.1:{}", gateway.proxy_port),
                ])
                .arg("--proxy-cacert")
                .arg(certs.join("mesh-ca.crt"))
                .arg("--proxy-cert")
                .arg(certs.join(format!("{name}.crt")))
                .arg("--proxy-key")
                .arg(certs.join(format!("{name}.key")));
        }
    }
    let output = command.arg(url).output().unwrap();
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let mut codes = text.split_whitespace().map(|c| c.parse().unwrap_or(0));
    (codes.next().unwrap_or(0), codes.next().unwrap_or(0))
}

/// Whether `openssl s_client` completes a handshake for `sni`, verified against the test CA:
/// through the forward proxy's CONNECT to `connect_to`, or straight to `port`.
fn openssl_handshake(port: u16, proxy: Option<&str>, sni: &str) -> bool {
    let mut command = Command::new("openssl");
    command.arg("s_client");
    match proxy {
        Some(connect_to) => command
            .args(["-proxy", &format!("127.0.0.1:{port}")])
            .args(["-connect", connect_to]),
        None => command.args(["-connect", &format!("127.0.0.1:{port}")]),
    };
    let output = command
        .args(["-servername", sni])
        .arg("-CAfile")
        .arg(certs().join("ca.crt"))
        .args(["-verify_return_error", "-brief"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    output.status.success()
        && String::from_utf8_lossy(&output.stderr).contains("CONNECTION ESTABLISHED")
}

/// Python's standard library as an `HTTPS_PROXY` client: the status of `GET url`, or the
/// proxy's refusal (`Tunnel connection failed: 403 Forbidden`).
fn python_through(gateway: &Gateway, url: &str) -> String {
    let script = r#"
import ssl, sys, urllib.request
proxy = "http://127.0.0.1:" + sys.argv[1]
context = ssl.create_default_context(cafile=sys.argv[2])
opener = urllib.request.build_opener(
    urllib.request.ProxyHandler({"https": proxy, "http": proxy}),
    urllib.request.HTTPSHandler(context=context))
try:
    print(opener.open(sys.argv[3], timeout=10).status)
except Exception as error:
    print(error)
"#;
    let output = Command::new("python3")
        .args(["-c", script, &gateway.proxy_port.to_string()])
        .arg(certs().join("ca.crt"))
        .arg(url)
        .output()
        .unwrap();
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// The policy's log lines once there are at least `count`.
fn lines(gateway: &Gateway, count: usize) -> Vec<Value> {
    wait_until("the policy's log lines", STARTUP_TIMEOUT, || {
        gateway.log_entries().len() >= count
    });
    gateway.log_entries()
}

/// The stand-in's record of connections whose ClientHello named `sni`.
fn reached(gateway: &Gateway, sni: &str) -> usize {
    gateway
        .tls_destinations
        .connections()
        .iter()
        .filter(|c| c["sni"] == sni)
        .count()
}

#[test]
fn hosts_wired_nowhere_are_reached_through_connect_absolute_form_and_the_passthrough_listener() {
    let gateway = gateway();
    let port = gateway.tls_destinations.port;
    for host in ["cloud.ibm.com", "a.b.ibm.com"] {
        assert_eq!(
            curl_through(&gateway, None, &format!("https://{host}:{port}/x")),
            (200, 200),
            "curl CONNECT {host}"
        );
        assert_eq!(
            curl_through(&gateway, None, &format!("http://{host}/x")),
            (0, 200),
            "curl absolute-form {host}: TLS originated to it"
        );
        assert_eq!(
            python_through(&gateway, &format!("https://{host}:{port}/x")),
            "200"
        );
        assert!(openssl_handshake(
            gateway.proxy_port,
            Some(&format!("{host}:{port}")),
            host
        ));
        assert!(
            openssl_handshake(gateway.passthrough_port, None, host),
            "passthrough {host}"
        );
    }
    wait_until(
        "the stand-in to record every connection",
        STARTUP_TIMEOUT,
        || reached(&gateway, "cloud.ibm.com") >= 5 && reached(&gateway, "a.b.ibm.com") >= 5,
    );
    // edition.cnn.com keeps its own cluster: absolute-form reaches the edition.cnn.com stand-in.
    assert_eq!(
        curl_through(&gateway, None, "http://edition.cnn.com/sport"),
        (0, 200)
    );
    assert_eq!(gateway.upstream.paths(), ["/sport"]);
}

#[test]
fn the_policy_decides_a_connect_on_its_authority_and_the_callers_identity() {
    let gateway = gateway();
    let port = gateway.tls_destinations.port;
    let cloud = format!("https://cloud.ibm.com:{port}/");
    assert_eq!(
        curl_through(&gateway, Some("default-sleep"), &cloud),
        (200, 200)
    );
    assert_eq!(
        curl_through(&gateway, Some("politics-sleep"), &cloud).0,
        403
    );
    let mongo = format!("https://mongo1.composedb.com:{port}/");
    assert_eq!(curl_through(&gateway, None, &mongo).0, 403);
    assert_eq!(
        python_through(&gateway, &mongo),
        "<urlopen error Tunnel connection failed: 403 Forbidden>"
    );
    // A tunnel's bytes are the caller's own TLS: its path cannot be decided, so a host with
    // path rules is not reached by CONNECT. Absolute-form keeps the path rules.
    assert_eq!(
        curl_through(
            &gateway,
            None,
            &format!("https://edition.cnn.com:{port}/sport")
        )
        .0,
        403
    );
    assert_eq!(
        curl_through(&gateway, None, "http://edition.cnn.com/politics"),
        (0, 404)
    );
    // A host written as an address, in any form, is refused before any rule (raw, as curl
    // would rewrite the decimal and octal forms itself).
    for host in [
        "127.0.0.2",
        "2130706434",
        "0177.0.0.2",
        "[::ffff:127.0.0.2]",
    ] {
        let connect = format!("CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n");
        assert_eq!(
            raw_request(gateway.proxy_port, connect.as_bytes()),
            403,
            "{host}"
        );
    }
    let entries = lines(&gateway, 10);
    let denied: Vec<(&str, &str)> = entries
        .iter()
        .filter(|e| e["decision"] == "deny")
        .map(|e| {
            (
                e["destination"].as_str().unwrap(),
                e["deniedBy"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        denied,
        [
            (
                "cloud.ibm.com",
                "egress_policy_denied:rule=elsewhere,list=callers"
            ),
            (
                "mongo1.composedb.com",
                "egress_policy_denied:rule=elsewhere,list=ibm"
            ),
            (
                "mongo1.composedb.com",
                "egress_policy_denied:rule=elsewhere,list=ibm"
            ),
            (
                "edition.cnn.com",
                "egress_policy_denied:rule=cnn,list=cnn-paths"
            ),
            (
                "edition.cnn.com",
                "egress_policy_denied:rule=cnn,list=cnn-paths"
            ),
            ("127.0.0.2", "egress_policy_denied:ip_literal"),
            ("2130706434", "egress_policy_denied:ip_literal"),
            ("0177.0.0.2", "egress_policy_denied:ip_literal"),
            ("[::ffff:127.0.0.2]", "egress_policy_denied:ip_literal"),
        ]
    );
    // One line per refused CONNECT, with its port, and nothing of them reached a stand-in.
    let mongo_lines: Vec<&Value> = entries
        .iter()
        .filter(|e| e["destination"] == "mongo1.composedb.com")
        .collect();
    assert_eq!(mongo_lines.len(), 2);
    assert_eq!(mongo_lines[0]["method"], "CONNECT");
    assert_eq!(mongo_lines[0]["port"], port);
    assert_eq!(mongo_lines[0]["responseCode"], 403);
    assert_eq!(reached(&gateway, "mongo1.composedb.com"), 0);
}

#[test]
fn a_connect_whose_client_hello_names_another_host_is_closed_before_a_byte_is_relayed() {
    let gateway = gateway();
    let port = gateway.tls_destinations.port;
    assert!(!openssl_handshake(
        gateway.proxy_port,
        Some(&format!("cloud.ibm.com:{port}")),
        "mongo1.composedb.com"
    ));
    // Not TLS at all is refused the same way.
    let output = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-m", "10", "-w", "%{http_connect}"])
        .args([
            "--proxy",
            &format!("http://127.0.0.1:{}", gateway.proxy_port),
        ])
        .args([
            "--proxytunnel",
            &format!("http://cloud.ibm.com:{port}/plain"),
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&output.stdout), "200");
    let entries = lines(&gateway, 2);
    let rejected: Vec<(&str, &str)> = entries
        .iter()
        .map(|e| {
            (
                e["decision"].as_str().unwrap(),
                e["deniedBy"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        rejected,
        [
            ("reject", "egress_policy_rejected:sni_mismatch"),
            ("reject", "egress_policy_rejected:not_client_hello"),
        ]
    );
    // The tunnel's TCP connection to the destination is opened when the CONNECT is answered
    // (as by every forward proxy), but no byte of the caller's reaches it.
    wait_until(
        "the stand-in to see both tunnels end",
        STARTUP_TIMEOUT,
        || gateway.tls_destinations.connections().len() >= 2,
    );
    for connection in gateway.tls_destinations.connections() {
        assert_eq!(connection["sni"], Value::Null, "{connection}");
        assert_eq!(connection["received"], 0, "{connection}");
    }
}

#[test]
fn a_name_resolving_to_a_refused_address_is_refused_on_every_path_and_never_connected() {
    let gateway = gateway();
    let port = gateway.tls_destinations.port;
    let canary = crate::ssrf::canary(port);
    assert_eq!(
        curl_through(&gateway, None, &format!("https://internal.ibm.com:{port}/")).0,
        503
    );
    assert_eq!(
        curl_through(&gateway, None, "http://internal.ibm.com/x"),
        (0, 503)
    );
    assert!(!openssl_handshake(
        gateway.passthrough_port,
        None,
        "internal.ibm.com"
    ));
    let entries = lines(&gateway, 4);
    let (recorded, decided): (Vec<&Value>, Vec<&Value>) = entries
        .iter()
        .partition(|e| e["instance"] == "egress-dns-guard");
    for entry in &decided[..2] {
        assert_eq!(entry["destination"], "internal.ibm.com");
        assert_eq!(entry["decision"], "deny");
        assert_eq!(
            entry["deniedBy"],
            "egress_policy_denied:address_guard,resolved=refused"
        );
    }
    assert_eq!(decided[2]["destination"], "internal.ibm.com");
    assert_eq!(decided[2]["relayed"], false);
    // What Envoy dropped, by name, address and reason: the DNS guard's record of the answer.
    let record = recorded.first().expect("the DNS guard's line");
    assert_eq!(record["destination"], "internal.ibm.com");
    assert_eq!(record["address"], "127.0.0.2");
    assert_eq!(record["reason"], "loopback");
    assert_eq!(record["level"], "error");
    assert_eq!(
        record["deniedBy"],
        "egress_policy_denied:address_guard,address=127.0.0.2,reason=loopback"
    );
    wait_until("the refusals to be counted", STARTUP_TIMEOUT, || {
        gateway.metric("denied", &[("rule", "address_guard"), ("list", "resolved")]) == 2
    });
    assert!(gateway.counter("dns_cache.egress.dns_address_filter_out") >= 1);
    assert_eq!(canary.load(std::sync::atomic::Ordering::SeqCst), 0);
}

#[test]
fn a_name_rebound_to_a_refused_address_is_refused_once_the_gateway_resolves_it_again() {
    let gateway = gateway();
    let port = gateway.tls_destinations.port;
    let canary = crate::ssrf::canary(port);
    let mut names = default_names();
    names["rebind.ibm.com"] = json!("127.0.0.1");
    gateway.dns.answer(&names);
    let rebound = format!("https://rebind.ibm.com:{port}/");
    assert_eq!(curl_through(&gateway, None, &rebound), (200, 200));
    // Now the same name answers the refused address.
    names["rebind.ibm.com"] = json!("127.0.0.2");
    gateway.dns.answer(&names);
    // The cache forgets a name unused for its host_ttl (1 s here), whatever it last resolved
    // to; until then the name keeps its last allowed address, never the refused one.
    wait_until(
        "the gateway to forget the name's old address",
        STARTUP_TIMEOUT,
        || gateway.counter("dns_cache.egress.num_hosts") == 0,
    );
    assert_eq!(curl_through(&gateway, None, &rebound).0, 503);
    assert!(
        gateway
            .dns
            .queries()
            .iter()
            .any(|q| q == "rebind.ibm.com 1 127.0.0.2"),
        "{:?}",
        gateway.dns.queries()
    );
    wait_until("the second CONNECT's line", STARTUP_TIMEOUT, || {
        gateway
            .log_entries()
            .iter()
            .filter(|e| e["instance"] != "egress-dns-guard")
            .count()
            >= 2
    });
    let entries = gateway.log_entries();
    let last = entries
        .iter()
        .rfind(|e| e["instance"] != "egress-dns-guard")
        .unwrap();
    assert!(
        entries.iter().any(|e| e["instance"] == "egress-dns-guard"
            && e["destination"] == "rebind.ibm.com"
            && e["address"] == "127.0.0.2"),
        "the rebound answer is on record: {entries:?}"
    );
    assert_eq!(last["destination"], "rebind.ibm.com");
    assert_eq!(
        last["deniedBy"],
        "egress_policy_denied:address_guard,resolved=refused"
    );
    assert_eq!(canary.load(std::sync::atomic::Ordering::SeqCst), 0);
}

/// TLS originated to any host verifies the destination's certificate for that host: a stand-in
/// that answers `impostor.ibm.com` with its `www.ibm.com` certificate is refused, and nothing of
/// the request reaches it.
#[test]
fn a_destination_whose_certificate_names_another_host_is_refused() {
    let gateway = gateway();
    assert_eq!(
        curl_through(&gateway, None, "http://cloud.ibm.com/x"),
        (0, 200)
    );
    assert_eq!(
        curl_through(&gateway, None, "http://impostor.ibm.com/x"),
        (0, 503)
    );
    wait_until("the stand-in to record both", STARTUP_TIMEOUT, || {
        gateway.tls_destinations.connections().len() >= 2
    });
    let refused: Vec<Value> = gateway
        .tls_destinations
        .connections()
        .into_iter()
        .filter(|c| c["sni"] == IMPOSTOR)
        .collect();
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(
        refused[0]["http"],
        Value::Null,
        "no request was sent: {refused:?}"
    );
}

/// `addressGuard.allowNames`: a name allowed into an internal range on purpose reaches it, and
/// no other name does, though the gateway's DNS cache (which sees no names) lets that range
/// through: the DNS guard blanks it in the other names' answers, and the line says so.
#[test]
fn an_internal_destination_allowed_for_one_name_is_reached_by_that_name_only() {
    let dir = crate::support::TempDir::new("allow-names");
    let mut config: Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("envoy/examples/forward-proxy.json")).unwrap(),
    )
    .unwrap();
    config["addressGuard"] = json!({"allowNames": {"db.ibm.com": ["127.0.0.3"]}});
    let path = dir.path("allow-names.json");
    std::fs::write(&path, config.to_string()).unwrap();
    let gateway = Gateway::start(&path);
    let port = gateway.tls_destinations.port;
    // The internal destination: a TLS stand-in on 127.0.0.3.
    let record = dir.path("internal.jsonl");
    let port_file = dir.path("internal.port");
    let mut command = Command::new(repo().join("scripts/fake-tls-destinations"));
    command
        .arg("--certs")
        .arg(certs())
        .args(["--names", "www.ibm.com", "--issue-on-demand"])
        .args(["--host", "127.0.0.3", "--port", &port.to_string()])
        .arg("--port-file")
        .arg(&port_file)
        .arg("--record")
        .arg(&record);
    let _internal = crate::support::Guard(command.spawn().unwrap());
    wait_until("the internal stand-in to listen", STARTUP_TIMEOUT, || {
        port_file.exists()
    });
    let mut names = default_names();
    names["db.ibm.com"] = json!("127.0.0.3");
    names["other.ibm.com"] = json!("127.0.0.3");
    gateway.dns.answer(&names);

    assert_eq!(
        curl_through(&gateway, None, &format!("https://db.ibm.com:{port}/")),
        (200, 200)
    );
    assert_eq!(
        curl_through(&gateway, None, &format!("https://other.ibm.com:{port}/")).0,
        503
    );
    wait_until("the internal stand-in's record", STARTUP_TIMEOUT, || {
        !crate::support::read_json_lines(&record).is_empty()
    });
    let reached: Vec<Value> = crate::support::read_json_lines(&record);
    assert_eq!(reached.len(), 1, "{reached:?}");
    assert_eq!(reached[0]["sni"], "db.ibm.com");
    wait_until("the lines", STARTUP_TIMEOUT, || {
        gateway.log_entries().len() >= 3
    });
    let entries = gateway.log_entries();
    let other: Vec<&Value> = entries
        .iter()
        .filter(|e| e["destination"] == "other.ibm.com")
        .collect();
    assert!(
        other.iter().any(|e| e["instance"] == "egress-dns-guard"
            && e["address"] == "127.0.0.3"
            && e["reason"] == "loopback"),
        "{entries:?}"
    );
    assert!(
        other.iter().any(|e| e["instance"] == "egress-proxy"
            && e["deniedBy"] == "egress_policy_denied:address_guard,resolved=refused"),
        "{entries:?}"
    );
    assert!(
        !entries
            .iter()
            .any(|e| e["destination"] == "db.ibm.com" && e["decision"] != "allow"),
        "{entries:?}"
    );
}

/// A tunnel goes to the port its `CONNECT` names, the one the policy decided on, never to the
/// port the gateway originates TLS to.
#[test]
fn a_connect_goes_to_the_port_it_names() {
    let gateway = gateway();
    let (named, accepted) = crate::ssrf::counting_listener("127.0.0.1", 0);
    let connect =
        format!("CONNECT cloud.ibm.com:{named} HTTP/1.1\r\nHost: cloud.ibm.com:{named}\r\n\r\n");
    raw_request(gateway.proxy_port, connect.as_bytes());
    wait_until("the connection to the port named", STARTUP_TIMEOUT, || {
        accepted.load(std::sync::atomic::Ordering::SeqCst) == 1
    });
    assert_eq!(reached(&gateway, "cloud.ibm.com"), 0);
    assert!(gateway.tls_destinations.connections().is_empty());
}
