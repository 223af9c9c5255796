//! Policy-core scaling for `scripts/bench`: evaluation time per request for lists (and routes)
//! of growing size, of each kind, and the memory each entry costs. Prints one JSON object.
//! Under callgrind (`--toggle-collect=*evaluate_with*`) it gives instruction counts instead.
//!
//! bench_core [--kind KIND] --sizes 10,1000 --iterations N
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use egress_policy::core::policy::Policy;
use egress_policy::core::policy::provider::RemoteLists;
use egress_policy::core::request::Request;
use serde_json::json;

const KINDS: &[&str] = &[
    "exact_host",
    "case_insensitive_host",
    "wildcard_host",
    "path_prefix",
    "regex",
    "cidr",
    "route_hosts",
];

/// A configuration with `size` entries of `kind`, and a request that misses every entry (the
/// lookup's worst case).
fn case(kind: &str, size: usize) -> (String, Request) {
    let mut request = Request::default();
    request.method = Some("GET".into());
    request.time_micros = Some(0);
    let _ = request.set_path(b"/news/politics/today");
    request.set_host("www.missing-site.org");
    request.source.ip = Some("192.168.77.5".into());
    let list = |value: &str, entry_type: &str, entries: Vec<String>| {
        json!({"lists": {"l": {"value": value, "entryType": entry_type, "entries": entries}},
               "rules": [{"name": "r", "check": ["l"]}]})
        .to_string()
    };
    let config = match kind {
        "exact_host" => list("request.host", "STRINGS", (0..size).map(|i| format!("host{i}.example.com")).collect()),
        "case_insensitive_host" => list("request.host", "CASE_INSENSITIVE_STRINGS", (0..size).map(|i| format!("Host{i}.Example.com")).collect()),
        "wildcard_host" => list("request.host", "GLOB", (0..size).map(|i| format!("*.d{i}.example.com")).collect()),
        "path_prefix" => list("request.url_path", "PATH_PREFIXES", (0..size).map(|i| format!("/p{i}/section")).collect()),
        "regex" => list("request.url_path", "REGEX", (0..size).map(|i| format!("/r{i}/[0-9]+")).collect()),
        "cidr" => list("source.ip", "IP_ADDRESSES", (0..size).map(|i| format!("10.{}.{}.0/24", i / 256 % 256, i % 256)).collect()),
        "route_hosts" => json!({"routes": (0..size).map(|i| json!({"hosts": [format!("h{i}.example.com")], "match": [{"uri": {"prefix": "/sport"}}]})).collect::<Vec<_>>()}).to_string(),
        other => panic!("unknown kind {other}"),
    };
    (config, request)
}

/// Counts the bytes the program holds, so the memory a compiled policy keeps can be measured
/// exactly (RSS does not shrink when memory is freed, so it cannot tell).
struct Counting;

static LIVE_BYTES: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE_BYTES.fetch_add(layout.size(), Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn live_bytes() -> usize {
    LIVE_BYTES.load(Ordering::Relaxed)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .map(|i| args[i + 1].clone())
    };
    let sizes: Vec<usize> = value("--sizes")
        .unwrap_or("10,1000".into())
        .split(',')
        .map(|s| s.parse().unwrap())
        .collect();
    let iterations: usize = value("--iterations")
        .unwrap_or("100000".into())
        .parse()
        .unwrap();
    let kinds: Vec<&str> = match value("--kind") {
        Some(kind) => vec![
            KINDS
                .iter()
                .copied()
                .find(|k| *k == kind)
                .expect("unknown kind"),
        ],
        None => KINDS.to_vec(),
    };
    let remote = RemoteLists::default();
    let mut out = serde_json::Map::new();
    for kind in &kinds {
        let mut row = serde_json::Map::new();
        for &size in &sizes {
            // One RegexSet of 100,000 patterns exceeds the regex engine's compiled-size limit
            // (10 MiB): the configuration is refused at load, so it cannot be measured.
            if *kind == "regex" && size > 10_000 {
                row.insert(
                    size.to_string(),
                    json!({"skipped": "over the regex engine's compiled-size limit"}),
                );
                continue;
            }
            let (config, request) = case(kind, size);
            let before = live_bytes();
            let policy = Policy::from_json(config.as_bytes()).unwrap();
            let bytes = live_bytes().saturating_sub(before);
            drop(config);
            for _ in 0..1000 {
                black_box(policy.evaluate_with(black_box(&request), &remote));
            }
            let start = Instant::now();
            for _ in 0..iterations {
                black_box(policy.evaluate_with(black_box(&request), &remote));
            }
            let ns = start.elapsed().as_nanos() as f64 / iterations as f64;
            row.insert(size.to_string(), json!({"ns_per_eval": ns}));
            if size >= 1000 {
                row.insert("bytes_per_entry".into(), json!(bytes as f64 / size as f64));
            }
            black_box(&policy);
        }
        out.insert(kind.to_string(), serde_json::Value::Object(row));
    }
    println!("{}", json!({"sizes": sizes, "kinds": out}));
}
