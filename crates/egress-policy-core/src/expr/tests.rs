use serde_json::Value as Json;

use super::*;
use crate::cases::request_from_json;

fn use_of(case: &Json) -> Use {
    match case.get("phase").and_then(Json::as_str) {
        Some("log") => Use::Log,
        _ => Use::Decision,
    }
}

/// Every case of `tests/data/expressions.json`: a condition and whether it holds for a request,
/// or the load-time error it must produce.
#[test]
fn expression_table_cases_hold() {
    let cases: Vec<Json> = serde_json::from_str(include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/data/expressions.json"
    )))
    .unwrap();
    assert!(cases.len() > 30);
    let mut failures = Vec::new();
    for case in &cases {
        let name = case["name"].as_str().unwrap();
        let source = case["expr"].as_str().unwrap();
        let compiled = compile_condition(source, use_of(case));
        match (case.get("error").and_then(Json::as_str), compiled) {
            (Some(expected), Err(err)) if err.to_string().contains(expected) => {}
            (Some(expected), outcome) => failures.push(format!(
                "{name}: expected error {expected:?}, got {outcome:?}"
            )),
            (None, Err(err)) => failures.push(format!("{name}: unexpected error {err}")),
            (None, Ok((expr, _))) => {
                let request = request_from_json(&case["request"]);
                let env = Env::request(&request);
                let expected = case["holds"].as_bool().unwrap();
                if expr.holds(&env) != expected {
                    failures.push(format!("{name}: expected {expected}"));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn compiled_expressions_report_what_they_read() {
    let (_, needs) = compile_condition(
        r#"request.headers["X-Team"] == "a" && source.labels["app"] == "b" && request.host == "c""#,
        Use::Decision,
    )
    .unwrap();
    assert!(needs.headers.contains("x-team"));
    assert!(needs.labels.contains("app"));
    assert!(needs.attr(Attr::RequestHost));
    assert!(!needs.attr(Attr::RequestPath));
}

#[test]
fn log_values_default_through_absent_response_attributes() {
    let (expr, ty, _) = compile_value("response.size | 0", Use::Log).unwrap();
    assert_eq!(ty, Type::Int);
    let request = Request::default();
    let env = Env::request(&request);
    assert_eq!(expr.eval(&env), Some(Value::Int(0)));
}
