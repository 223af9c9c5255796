//! Load generator for `scripts/bench`: keep-alive HTTP/1.1 connections to the gateway, either as
//! fast as they go (`--rate 0`: capacity) or at a fixed total rate, wrk2-style: every request has
//! a scheduled send time and its latency is counted from it, so a stalled server cannot hide its
//! stall (no coordinated omission). Prints one JSON object.
//!
//! loadgen --port P --host H --paths /politics,/sport --connections C --rate R --seconds S
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

struct Args {
    port: u16,
    host: String,
    paths: Vec<String>,
    connections: usize,
    rate: f64,
    seconds: f64,
}

fn args() -> Args {
    let mut args = Args {
        port: 0,
        host: "edition.cnn.com".into(),
        paths: vec!["/".into()],
        connections: 4,
        rate: 0.0,
        seconds: 5.0,
    };
    let raw: Vec<String> = std::env::args().skip(1).collect();
    for pair in raw.chunks(2) {
        let value = pair.get(1).cloned().unwrap_or_default();
        match pair[0].as_str() {
            "--port" => args.port = value.parse().unwrap(),
            "--host" => args.host = value,
            "--paths" => args.paths = value.split(',').map(str::to_owned).collect(),
            "--connections" => args.connections = value.parse().unwrap(),
            "--rate" => args.rate = value.parse().unwrap(),
            "--seconds" => args.seconds = value.parse().unwrap(),
            other => panic!("unknown argument {other}"),
        }
    }
    assert!(args.port != 0, "--port is required");
    args
}

#[derive(Default)]
struct Tally {
    statuses: BTreeMap<u16, u64>,
    errors: u64,
    latencies_us: Vec<u32>,
}

fn read_response(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> Result<u16, String> {
    // Headers first; then the body by Content-Length (the gateway and upstream always send it).
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buffer[..end]).to_ascii_lowercase();
            let status: u16 = head
                .split(' ')
                .nth(1)
                .and_then(|s| s.parse().ok())
                .ok_or("no status")?;
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            let total = end + 4 + length;
            while buffer.len() < total {
                let n = stream.read(&mut chunk).map_err(|e| e.to_string())?;
                if n == 0 {
                    return Err("closed".into());
                }
                buffer.extend_from_slice(&chunk[..n]);
            }
            buffer.drain(..total);
            return Ok(status);
        }
        let n = stream.read(&mut chunk).map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("closed".into());
        }
        buffer.extend_from_slice(&chunk[..n]);
    }
}

fn connection(args: &Args, index: usize, start: Instant) -> Tally {
    let mut tally = Tally::default();
    let connect = || {
        let stream = TcpStream::connect(("127.0.0.1", args.port)).unwrap();
        stream.set_nodelay(true).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream
    };
    let mut stream = connect();
    let mut buffer = Vec::new();
    let end = start + Duration::from_secs_f64(args.seconds);
    let interval =
        (args.rate > 0.0).then(|| Duration::from_secs_f64(args.connections as f64 / args.rate));
    // Connections start spread over one interval so their requests interleave evenly.
    let offset = interval.map_or(Duration::ZERO, |i| {
        i.mul_f64(index as f64 / args.connections as f64)
    });
    let mut n: u32 = 0;
    loop {
        let scheduled = match interval {
            Some(interval) => start + offset + interval * n,
            None => Instant::now(),
        };
        if scheduled >= end {
            break;
        }
        let now = Instant::now();
        if scheduled > now {
            std::thread::sleep(scheduled - now);
        }
        let path = &args.paths[(n as usize + index) % args.paths.len()];
        n += 1;
        let request = format!("GET {path} HTTP/1.1\r\nHost: {}\r\n\r\n", args.host);
        let result = stream
            .write_all(request.as_bytes())
            .map_err(|e| e.to_string())
            .and_then(|_| read_response(&mut stream, &mut buffer));
        match result {
            Ok(status) => {
                *tally.statuses.entry(status).or_default() += 1;
                tally
                    .latencies_us
                    .push(u32::try_from(scheduled.elapsed().as_micros()).unwrap_or(u32::MAX));
            }
            Err(_) => {
                tally.errors += 1;
                stream = connect();
                buffer.clear();
            }
        }
    }
    tally
}

fn main() {
    let args = args();
    let start = Instant::now() + Duration::from_millis(50);
    let tallies: Vec<Tally> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..args.connections)
            .map(|i| {
                scope.spawn({
                    let args = &args;
                    move || connection(args, i, start)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let elapsed = start.elapsed().as_secs_f64();
    let mut statuses: BTreeMap<u16, u64> = BTreeMap::new();
    let mut latencies = Vec::new();
    let mut errors = 0;
    for tally in tallies {
        for (status, count) in tally.statuses {
            *statuses.entry(status).or_default() += count;
        }
        latencies.extend(tally.latencies_us);
        errors += tally.errors;
    }
    latencies.sort_unstable();
    let percentile = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    let completed = latencies.len();
    let statuses: Vec<String> = statuses
        .iter()
        .map(|(s, c)| format!("\"{s}\": {c}"))
        .collect();
    println!(
        "{{\"completed\": {completed}, \"errors\": {errors}, \"seconds\": {elapsed:.3}, \"throughput\": {:.1}, \"p50_us\": {}, \"p99_us\": {}, \"statuses\": {{{}}}}}",
        completed as f64 / elapsed,
        percentile(0.50),
        percentile(0.99),
        statuses.join(", ")
    );
}
