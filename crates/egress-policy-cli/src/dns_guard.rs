//! `egress-policy dns-guard`: the gateway's resolver sits behind this small DNS relay, which
//! writes a log line for each address an answer gives that the address guard refuses: the name,
//! the address and the reason, which Envoy's DNS cache does not say when it drops the address
//! (README: Security). Envoy refuses what it can refuse for every name; the answers pass through
//! unchanged but for the addresses only some names may reach (`allowNames`), which this relay
//! blanks in the answers for other names, as no filter without names can.

use std::fs::OpenOptions;
use std::io::Write;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use egress_policy_core::addresses::{AddressGuard, AddressRules, Network, Verdict};
use egress_policy_core::dns::{blank_addresses, read_answer};
use egress_policy_core::evidence::{CheckpointEvery, LogChain, Sealing, process_signing_key};
use egress_policy_core::telemetry::time::rfc3339_micros;
use serde_json::json;

use crate::EXIT_INVALID;
use crate::load::load;

#[derive(clap::Args)]
pub struct Args {
    /// Plugin configuration whose addressGuard is applied (as `address-filter` computes it for
    /// Envoy); without one, the default guard.
    #[arg(value_name = "CONFIG")]
    config: Option<String>,
    /// Where to listen for the gateway's queries (UDP).
    #[arg(long, default_value = "127.0.0.1:5353")]
    listen: SocketAddr,
    /// The resolver to relay to (UDP); default the first `nameserver` of /etc/resolv.conf.
    #[arg(long)]
    upstream: Option<SocketAddr>,
    /// One more exception of this deployment (CIDR or address), repeatable, as given to
    /// `address-filter`.
    #[arg(long = "allow", value_name = "CIDR")]
    allow: Vec<String>,
    /// The file the log lines are appended to (the gateway's policy log); default standard
    /// error.
    #[arg(long)]
    log: Option<std::path::PathBuf>,
    /// Writes the bound port here once listening (for `--listen` port 0).
    #[arg(long)]
    port_file: Option<std::path::PathBuf>,
}

/// How long an answer may take before the query is dropped (the resolver asks again).
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(5);

pub fn run(args: &Args) -> ExitCode {
    match serve(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(why) => {
            eprintln!("dns-guard: {why}");
            ExitCode::from(EXIT_INVALID)
        }
    }
}

fn serve(args: &Args) -> Result<(), String> {
    let (guard, sealing) = match &args.config {
        None => (
            AddressGuard::default(),
            Sealing::new(INSTANCE, "none", CheckpointEvery::default()),
        ),
        Some(file) => {
            let policy = load(file, false).map_err(|errors| format!("{file}: {errors}"))?;
            let sealing = Sealing::new(INSTANCE, &policy.version, policy.checkpoint_every);
            (policy.address_guard, sealing)
        }
    };
    // Its lines are a stream of the policy log like the filter's: chained, and signed with the
    // same key when one is set.
    let key = process_signing_key().clone()?;
    let stream = LogChain::random_stream_name().ok_or("no randomness for the log stream's name")?;
    let mut more = Vec::new();
    for entry in &args.allow {
        more.push(Network::parse(entry).map_err(|why| format!("--allow: {why}"))?);
    }
    let rules = Arc::new(Rules {
        nameless: guard.nameless_rules(&more),
        guard,
        more,
    });
    let upstream = match args.upstream {
        Some(upstream) => upstream,
        None => system_resolver()?,
    };
    let socket = UdpSocket::bind(args.listen).map_err(|e| format!("{}: {e}", args.listen))?;
    let bound = socket.local_addr().map_err(|e| e.to_string())?;
    if let Some(port_file) = &args.port_file {
        // Renamed into place: whoever waits for the file never reads it half written.
        let partial = port_file.with_extension("partial");
        std::fs::write(&partial, bound.port().to_string())
            .and_then(|()| std::fs::rename(&partial, port_file))
            .map_err(|e| format!("{}: {e}", port_file.display()))?;
    }
    let log = Arc::new(Mutex::new(GuardLog {
        out: match &args.log {
            Some(path) => Box::new(
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|e| format!("{}: {e}", path.display()))?,
            ),
            None => Box::new(std::io::stderr()),
        },
        chain: LogChain::new(stream, key),
        sealing,
    }));
    let socket = Arc::new(socket);
    let mut query = [0u8; 4096];
    loop {
        let (size, client) = match socket.recv_from(&mut query) {
            Ok(received) => received,
            Err(e) => {
                eprintln!("dns-guard: {e}");
                continue;
            }
        };
        let query = query.get(..size).unwrap_or_default().to_vec();
        let (socket, rules, log) = (socket.clone(), rules.clone(), log.clone());
        // One thread per query: a slow answer holds up no other.
        std::thread::spawn(move || {
            if let Some(answer) = relay(&query, upstream) {
                let answer = guarded(answer, &rules, &log);
                if let Err(e) = socket.send_to(&answer, client) {
                    eprintln!("dns-guard: answering {client}: {e}");
                }
            }
        });
    }
}

/// The upstream's answer to `query`, or `None` (the resolver retries or fails).
fn relay(query: &[u8], upstream: SocketAddr) -> Option<Vec<u8>> {
    let local: SocketAddr = if upstream.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        ([0u16; 8], 0).into()
    };
    let socket = UdpSocket::bind(local).ok()?;
    socket.connect(upstream).ok()?;
    socket.set_read_timeout(Some(UPSTREAM_TIMEOUT)).ok()?;
    socket.send(query).ok()?;
    let mut answer = vec![0u8; 65_535];
    let size = socket.recv(&mut answer).ok()?;
    answer.truncate(size);
    Some(answer)
}

/// The address guard of one gateway: per name, and as Envoy's DNS cache applies it.
struct Rules {
    guard: AddressGuard,
    /// A deployment's own exceptions (`--allow`).
    more: Vec<Network>,
    /// What Envoy's DNS cache refuses (`address-filter`).
    nameless: AddressRules,
}

impl Rules {
    /// Why `name` may not connect to `address`, if it may not.
    fn refused(&self, name: &str, address: IpAddr) -> Option<&'static str> {
        if self.more.iter().any(|network| network.contains(address)) {
            return None;
        }
        match self.guard.check(Some(name), address) {
            Verdict::Refused(reason) => Some(reason),
            Verdict::Allowed => None,
        }
    }
}

/// `answer` as the gateway may see it, with one log line per refused address: those Envoy's DNS
/// cache lets through (another name's exception) are blanked here; the rest Envoy drops.
fn guarded(answer: Vec<u8>, rules: &Rules, log: &Mutex<GuardLog>) -> Vec<u8> {
    let Ok(read) = read_answer(&answer) else {
        return answer;
    };
    for address in &read.addresses {
        if let Some(reason) = rules.refused(&read.name, *address) {
            record_refusal(&read.name, *address, reason, log);
        }
    }
    let only_here = |address: IpAddr| {
        rules.refused(&read.name, address).is_some()
            && rules.nameless.check(address) == Verdict::Allowed
    };
    if !read.addresses.iter().any(|a| only_here(*a)) {
        return answer;
    }
    // Blanked to the unspecified address, which Envoy's DNS cache drops and says so; if this
    // deployment allows even that, nothing is passed on.
    let unspecified_refused = rules.nameless.check(IpAddr::from([0u8; 4])) != Verdict::Allowed
        && rules.nameless.check(IpAddr::from([0u16; 8])) != Verdict::Allowed;
    match blank_addresses(&answer, only_here) {
        Ok((blanked, _)) if unspecified_refused => blanked,
        _ => Vec::new(),
    }
}

/// One line for a refused address, in the policy log's vocabulary.
fn record_refusal(name: &str, address: IpAddr, reason: &str, log: &Mutex<GuardLog>) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .ok()
        .and_then(|d| i64::try_from(d.as_micros()).ok());
    let time = now.and_then(rfc3339_micros);
    // In the policy log's order: level, time, instance first.
    let fields = [
        ("level", json!("error")),
        ("time", json!(time)),
        ("instance", json!(INSTANCE)),
        ("decision", json!("deny")),
        (
            "deniedBy",
            json!(format!(
                "egress_policy_denied:address_guard,address={address},reason={reason}"
            )),
        ),
        ("destination", json!(name)),
        ("address", json!(address.to_string())),
        ("reason", json!(reason)),
    ];
    let mut line = String::from("{");
    for (i, (name, value)) in fields.iter().enumerate() {
        if i > 0 {
            line.push(',');
        }
        line.push_str(&format!("\"{name}\":{value}"));
    }
    if let Ok(mut log) = log.lock() {
        line.push_str(&log.sealing.policy_version);
        line.push('}');
        let GuardLog {
            out,
            chain,
            sealing,
        } = &mut *log;
        let sealed = chain.seal(&line, now, sealing);
        // One write: appended whole beside the gateway's own lines, in the chain's order.
        if let Err(e) = out.write_all(format!("{sealed}\n").as_bytes()) {
            eprintln!("dns-guard: writing the log: {e}");
        }
    }
}

/// Where the guard's lines go, and the stream they continue.
struct GuardLog {
    out: Box<dyn Write + Send>,
    chain: LogChain,
    sealing: Sealing,
}

/// The `instance` of the guard's lines.
const INSTANCE: &str = "egress-dns-guard";

/// The first `nameserver` of /etc/resolv.conf, on port 53.
fn system_resolver() -> Result<SocketAddr, String> {
    let text = std::fs::read_to_string("/etc/resolv.conf")
        .map_err(|e| format!("/etc/resolv.conf: {e} (give --upstream)"))?;
    text.lines()
        .filter_map(|line| line.trim().strip_prefix("nameserver"))
        .find_map(|rest| rest.trim().parse::<std::net::IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .ok_or_else(|| "/etc/resolv.conf names no nameserver (give --upstream)".into())
}
