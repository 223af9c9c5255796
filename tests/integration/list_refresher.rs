//! The list fetches of `lists.rs`, natively, with the fake host: schedules, answers of every
//! kind, and several VMs of one gateway sharing one fetch.

use std::cell::RefCell;

use std::rc::Rc;

use egress_policy::adapter::*;
use egress_policy::core::policy::Policy;
use egress_policy::core::refresh::SharedKeys;
use egress_policy_testkit::fake_host::{FAKE_NOW_MICROS, FakeHost, request_with_path};

const SECOND: i64 = 1_000_000;

fn policy(provider_extra: &str) -> Policy {
    Policy::from_json(
        format!(
            r#"{{"lists": {{"paths": {{"value": "request.url_path", "entries": ["/health"],
              "provider": {{"cluster": "lists", "path": "/paths", "refreshInterval": "1s", "ttl": "3s",
                            "maxBytes": 64 {provider_extra}}}}}}},
             "rules": [{{"name": "check", "check": ["paths"]}}]}}"#
        )
        .as_bytes(),
    )
    .unwrap()
}

/// A refresher configured at time 0, its first fetch sent.
fn started(provider_extra: &str) -> (ListRefresher, FakeHost) {
    let host = FakeHost::default();
    host.now.set(0);
    let mut lists = ListRefresher::default();
    assert_eq!(lists.configure(&host, policy(provider_extra)), 200_000);
    (lists, host)
}

fn allowed(lists: &ListRefresher, path: &str, now: i64) -> bool {
    let active = lists.active().unwrap();
    let mut request = request_with_path(path);
    request.time_micros = Some(now);
    let remote = active.remote.load();
    active
        .policy
        .evaluate_with(&request, &remote)
        .denied
        .is_none()
}

/// Delivers the list server's answer to the newest call.
fn answer(lists: &mut ListRefresher, host: &mut FakeHost, status: Option<&[u8]>, body: &[u8]) {
    host.call_status = status.map(<[u8]>::to_vec);
    host.call_body = body.to_vec();
    let token = u32::try_from(host.calls.borrow().len()).unwrap();
    let headers = if status.is_some() { 3 } else { 0 };
    lists.on_http_call_response(host, token, headers, body.len());
}

fn fetches(host: &FakeHost, result: &str) -> usize {
    let name = format!("egress_policy.list=.=paths;.;result=.={result};.;list_fetches");
    host.counters
        .borrow()
        .iter()
        .filter(|c| **c == name)
        .count()
}

#[test]
fn lists_are_fetched_at_start_and_every_refresh_interval() {
    let (mut lists, mut host) = started("");
    assert_eq!(
        *host.calls.borrow(),
        [("lists".to_owned(), "/paths".to_owned(), 5_000)]
    );
    host.now.set(2 * SECOND);
    lists.on_tick(&host);
    assert_eq!(host.calls.borrow().len(), 1, "one fetch at a time");
    answer(&mut lists, &mut host, Some(b"200"), b"/sport\n");
    lists.on_tick(&host);
    assert_eq!(host.calls.borrow().len(), 2, "due since 1s, sent once free");
    answer(&mut lists, &mut host, Some(b"200"), b"/sport\n");
    host.now.set(3 * SECOND - 1);
    lists.on_tick(&host);
    assert_eq!(
        host.calls.borrow().len(),
        2,
        "next one refreshInterval later"
    );
    host.now.set(3 * SECOND);
    lists.on_tick(&host);
    assert_eq!(host.calls.borrow().len(), 3);
}

#[test]
fn the_last_good_list_serves_until_ttl_then_on_error_denies() {
    let (mut lists, mut host) = started("");
    assert!(
        !allowed(&lists, "/sport", 0),
        "before the first fetch: onError deny"
    );
    assert!(allowed(&lists, "/health", 0), "static entries always apply");
    answer(&mut lists, &mut host, Some(b"200"), b"/sport\n/news\n");
    assert_eq!(fetches(&host, "success"), 1);
    assert_eq!(
        host.gauges.borrow()["egress_policy.list=.=paths;.;list_entries"],
        2
    );
    assert!(allowed(&lists, "/sport", 1));
    assert!(!allowed(&lists, "/politics", 1));

    host.now.set(SECOND);
    lists.on_tick(&host);
    answer(&mut lists, &mut host, Some(b"503"), b"");
    assert_eq!(fetches(&host, "failure"), 1);
    assert!(host.warnings.borrow()[0].contains("fetch failed (status 503)"));
    assert!(
        allowed(&lists, "/sport", 3 * SECOND),
        "stale but within ttl"
    );
    assert!(
        !allowed(&lists, "/sport", 3 * SECOND + 1),
        "past ttl: onError deny"
    );
    assert!(allowed(&lists, "/health", 3 * SECOND + 1));
}

/// Every failure a list server can produce leaves the list in force untouched, is counted
/// and logged with its reason, and never reads a body it cannot use.
#[test]
fn every_list_server_failure_is_a_failed_fetch_that_changes_nothing() {
    // (what, :status, body, the reason logged)
    type Case<'a> = (&'a str, Option<&'a [u8]>, &'a [u8], &'a str);
    let cases: [Case; 8] = [
        (
            "oversized",
            Some(b"200"),
            &[b'a'; 65],
            "over maxBytes 64; not read",
        ),
        ("stalled body (timeout)", None, b"", "no response"),
        ("connection closed mid-body", None, b"/spo", "no response"),
        (
            "hang (Envoy's own 504 at the timeout)",
            Some(b"504"),
            b"",
            "status 504",
        ),
        ("empty 200", Some(b"200"), b"", "no entries"),
        ("comments only", Some(b"200"), b"# nothing\n", "no entries"),
        ("500", Some(b"500"), b"/politics\n", "status 500"),
        (
            "bad entry",
            Some(b"200"),
            b"[\"/politics\", 1]",
            "JSON array of strings",
        ),
    ];
    for (what, status, body, reason) in cases {
        let (mut lists, mut host) = started("");
        answer(&mut lists, &mut host, Some(b"200"), b"/sport\n");
        host.now.set(SECOND);
        lists.on_tick(&host);
        host.body_reads.borrow_mut().clear();
        answer(&mut lists, &mut host, status, body);
        assert_eq!(fetches(&host, "failure"), 1, "{what}");
        let warning = host.warnings.borrow().last().cloned().unwrap_or_default();
        assert!(warning.contains(reason), "{what}: {warning}");
        assert!(
            allowed(&lists, "/sport", SECOND),
            "{what}: the list in force stays"
        );
        assert!(!allowed(&lists, "/politics", SECOND), "{what}");
        if status != Some(b"200") || body.len() > 64 {
            assert!(host.body_reads.borrow().is_empty(), "{what}: body read");
        }
    }
}

#[test]
fn an_empty_list_replaces_the_list_in_force_only_when_allowed() {
    let (mut lists, mut host) = started(r#", "allowEmpty": true"#);
    answer(&mut lists, &mut host, Some(b"200"), b"/sport\n");
    host.now.set(SECOND);
    lists.on_tick(&host);
    answer(&mut lists, &mut host, Some(b"200"), b"");
    assert_eq!(fetches(&host, "success"), 2);
    assert!(!allowed(&lists, "/sport", SECOND));
    assert!(allowed(&lists, "/health", SECOND));
}

#[test]
fn answers_to_unknown_calls_and_undispatchable_fetches_are_handled() {
    let (mut lists, mut host) = started("");
    host.call_status = Some(b"200".to_vec());
    host.call_body = b"/politics\n".to_vec();
    lists.on_http_call_response(&host, 99, 3, 10);
    assert!(host.counters.borrow().is_empty(), "not ours: ignored");
    assert!(!allowed(&lists, "/politics", 0));

    host.dispatch_error = Some("BadArgument".into());
    answer(&mut lists, &mut host, Some(b"200"), b"/sport\n");
    host.now.set(SECOND);
    lists.on_tick(&host);
    assert_eq!(fetches(&host, "failure"), 1);
    assert!(host.warnings.borrow()[0].contains("cannot call cluster lists: BadArgument"));
}

/// Three VMs of one gateway (two workers and the main thread), configured at time 0.
fn gateway_of_three_vms() -> Vec<(ListRefresher, FakeHost)> {
    let store = Rc::default();
    (0..3)
        .map(|_| {
            let mut host = FakeHost::default();
            host.shared = Rc::clone(&store);
            host.now.set(0);
            let mut lists = ListRefresher::default();
            lists.configure(&host, policy(""));
            (lists, host)
        })
        .collect()
}

fn calls(vms: &[(ListRefresher, FakeHost)]) -> usize {
    vms.iter().map(|(_, host)| host.calls.borrow().len()).sum()
}

#[test]
fn a_gateway_fetches_each_list_once_per_interval_and_every_vm_decides_with_it() {
    let mut vms = gateway_of_three_vms();
    assert_eq!(calls(&vms), 1, "one VM took the lease");
    let (lists, host) = &mut vms[0];
    answer(lists, host, Some(b"200"), b"/sport\n");
    for (lists, host) in &mut vms {
        lists.on_tick(host);
        assert!(allowed(lists, "/sport", 1), "in force in every VM");
    }
    assert_eq!(calls(&vms), 1);
    for round in 1..=5 {
        let before: Vec<usize> = vms.iter().map(|(_, h)| h.calls.borrow().len()).collect();
        for (lists, host) in &mut vms {
            host.now.set(round * SECOND);
            lists.on_tick(host);
        }
        let fetching: Vec<usize> = (0..vms.len())
            .filter(|&vm| vms[vm].1.calls.borrow().len() > before[vm])
            .collect();
        assert_eq!(fetching.len(), 1, "round {round}: one fetch");
        let (lists, host) = &mut vms[fetching[0]];
        host.now.set(round * SECOND + 5);
        answer(lists, host, Some(b"200"), b"/sport\n/news\n");
    }
    assert_eq!(calls(&vms), 6);
    for (lists, host) in &mut vms {
        lists.on_tick(host);
        assert!(allowed(lists, "/news", 5 * SECOND + 6));
        assert!(!allowed(lists, "/politics", 5 * SECOND + 6));
    }
}

#[test]
fn every_vm_expires_a_shared_list_at_the_same_time() {
    let mut vms = gateway_of_three_vms();
    let (lists, host) = &mut vms[0];
    answer(lists, host, Some(b"200"), b"/sport\n");
    for (lists, host) in &mut vms {
        host.now.set(SECOND / 2);
        lists.on_tick(host);
        assert!(
            allowed(lists, "/sport", 3 * SECOND),
            "ttl counts from the fetch"
        );
        assert!(!allowed(lists, "/sport", 3 * SECOND + 1), "in every VM");
    }
}

#[test]
fn another_vm_fetches_when_the_fetching_one_never_answers() {
    let mut vms = gateway_of_three_vms();
    // VM 0 took the lease, and its answer never comes (its VM was reloaded).
    let (lists, host) = &mut vms[1];
    host.now.set(SECOND - 1);
    lists.on_tick(host);
    assert_eq!(calls(&vms), 1, "the lease holds until the interval ends");
    let (lists, host) = &mut vms[1];
    host.now.set(SECOND);
    lists.on_tick(host);
    assert_eq!(host.calls.borrow().len(), 1, "then another VM fetches");
    answer(lists, host, Some(b"200"), b"/sport\n");
    let (lists, host) = &mut vms[2];
    lists.on_tick(host);
    assert!(allowed(lists, "/sport", SECOND));
}

#[test]
fn a_failed_fetch_is_counted_once_and_every_vm_keeps_its_list() {
    let mut vms = gateway_of_three_vms();
    let (lists, host) = &mut vms[0];
    answer(lists, host, Some(b"200"), b"/sport\n");
    host.now.set(SECOND);
    lists.on_tick(host);
    answer(lists, host, Some(b"500"), b"");
    assert_eq!(fetches(host, "failure"), 1);
    for (lists, host) in &mut vms {
        host.now.set(SECOND + 1);
        lists.on_tick(host);
        assert!(allowed(lists, "/sport", SECOND + 1));
    }
    assert_eq!(calls(&vms), 2, "nobody fetched again within the interval");
}

#[test]
fn a_reloaded_configuration_starts_with_the_list_already_fetched() {
    let (mut lists, mut host) = started("");
    answer(&mut lists, &mut host, Some(b"200"), b"/sport\n");
    host.now.set(SECOND / 2);
    lists.configure(&host, policy(""));
    assert!(allowed(&lists, "/sport", SECOND / 2), "no onError window");
    assert_eq!(
        host.calls.borrow().len(),
        1,
        "and no fetch before it is due"
    );
}

/// Whatever another module (or a broken one) left under the keys, a VM fetches and decides
/// as if nothing were shared: short values, a version without a body, a body without its time.
#[test]
fn garbage_in_shared_data_is_ignored_and_the_list_is_fetched() {
    let host = FakeHost::default();
    let keys = SharedKeys::of(policy("").provider(0).unwrap().1);
    for (key, value) in [
        (&keys.lease, &b"\x01"[..]),
        (&keys.version, &i64::MAX.to_le_bytes()[..]),
        (&keys.body, &b"1234"[..]),
    ] {
        host.set_shared_data(key, value, 0).unwrap();
    }
    let mut lists = ListRefresher::default();
    lists.configure(&host, policy(""));
    assert_eq!(host.calls.borrow().len(), 1, "fetched");
    assert!(
        !allowed(&lists, "/sport", FAKE_NOW_MICROS),
        "nothing adopted"
    );
    let mut host = host;
    answer(&mut lists, &mut host, Some(b"200"), b"/sport\n");
    assert!(allowed(&lists, "/sport", FAKE_NOW_MICROS));
}

#[test]
fn without_shared_data_every_vm_fetches_for_itself() {
    let store: Rc<RefCell<egress_policy_testkit::fake_host::SharedStore>> = Rc::default();
    store.borrow_mut().unavailable = true;
    for _ in 0..2 {
        let mut host = FakeHost::default();
        host.shared = Rc::clone(&store);
        let mut lists = ListRefresher::default();
        lists.configure(&host, policy(""));
        assert_eq!(host.calls.borrow().len(), 1);
    }
}

#[test]
fn a_shared_list_this_configuration_refuses_is_logged_and_changes_nothing() {
    let mut vms = gateway_of_three_vms();
    let (lists, host) = &mut vms[0];
    answer(lists, host, Some(b"200"), b"/sport\n");
    // VM 2 runs another configuration with the same provider and a smaller maxBytes.
    let (lists, host) = &mut vms[2];
    let small = Policy::from_json(
        br#"{"lists": {"paths": {"value": "request.url_path", "entries": ["/health"],
             "provider": {"cluster": "lists", "path": "/paths", "refreshInterval": "1s", "ttl": "3s",
                          "maxBytes": 3}}},
           "rules": [{"name": "check", "check": ["paths"]}]}"#,
    )
    .unwrap();
    lists.configure(host, small);
    assert!(!allowed(lists, "/sport", 1));
    assert!(host.warnings.borrow()[0].contains("fetched by another worker is refused here"));
}

#[test]
fn list_ages_are_reported_each_tick_after_the_first_good_fetch() {
    let (mut lists, mut host) = started("");
    lists.on_tick(&host);
    assert!(
        !host
            .gauges
            .borrow()
            .contains_key("egress_policy.list=.=paths;.;list_age_seconds")
    );
    answer(&mut lists, &mut host, Some(b"200"), b"/sport\n");
    host.now.set(2 * SECOND + 10);
    lists.on_tick(&host);
    assert_eq!(
        host.gauges.borrow()["egress_policy.list=.=paths;.;list_age_seconds"],
        2
    );
}
