//! The expression language: any text as a decision and as a log expression. What compiles
//! must evaluate against a request with nothing known, without failing.
#![no_main]

use egress_policy_core::expr::{Env, Use, compile_value};
use egress_policy_core::request::Request;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|source: &str| {
    let request = Request::default();
    for usage in [Use::Decision, Use::Log] {
        if let Ok((expr, _, _)) = compile_value(source, usage) {
            let _ = expr.eval(&Env::request(&request));
        }
    }
});
