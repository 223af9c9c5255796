//! `audit --verify` reads logs an attacker may have edited: any bytes as lines. Nothing it reads
//! can make it panic, every line is either counted apart as Envoy's or checked, and a line with
//! no chain value is never taken for part of a stream.
#![no_main]

use egress_policy_core::evidence::{Verifier, split_sealed};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let text = String::from_utf8_lossy(bytes);
    let mut verifier = Verifier::new(Vec::new());
    for (number, line) in text.lines().enumerate() {
        verifier.line(&format!("fuzz:{}", number + 1), line);
    }
    let lines = text.lines().filter(|l| !l.trim().is_empty()).count() as u64;
    assert_eq!(verifier.lines, lines);
    let in_streams: u64 = verifier.streams().values().map(|s| s.lines()).sum();
    let sealed = text.lines().filter(|l| split_sealed(l).is_some()).count() as u64;
    assert!(in_streams <= sealed);
    // No key was given: no checkpoint can verify.
    assert!(verifier.streams().values().all(|s| s.checkpoints == 0));
});
