//! YAML in and out, with serde-saphyr (pure Rust, no `unsafe` parser underneath, no panics on
//! malformed input): every file the CLI reads may be hand-written or hostile.

use serde_json::Value;

/// Every non-empty document of a YAML stream, as JSON values.
pub fn documents(text: &str) -> Result<Vec<Value>, String> {
    let documents: Vec<Value> =
        serde_saphyr::from_multiple(text).map_err(|e| format!("invalid YAML: {e}"))?;
    Ok(documents.into_iter().filter(|d| !d.is_null()).collect())
}

/// One YAML document.
pub fn to_string(value: &Value) -> Result<String, String> {
    serde_saphyr::to_string(value).map_err(|e| format!("cannot write YAML: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_read_every_document_and_skip_empty_ones() {
        let documents = documents("a: 1\n---\n---\nb: [x, 'y']\n").unwrap();
        assert_eq!(
            documents,
            [
                serde_json::json!({"a": 1}),
                serde_json::json!({"b": ["x", "y"]})
            ]
        );
    }

    #[test]
    fn malformed_yaml_is_an_error_that_says_so() {
        for bad in ["a: [1, 2", "a: b: c", "{", "a: *missing", "a: 1\na: 2"] {
            let error = documents(bad).unwrap_err();
            assert!(error.starts_with("invalid YAML"), "{bad}: {error}");
        }
    }

    #[test]
    fn values_written_read_back_the_same() {
        let value = serde_json::json!({"labels": {"istio": "egressgateway"}, "n": 3, "on": "yes",
                                       "quoted": "true", "list": ["a: b", "#c"]});
        assert_eq!(documents(&to_string(&value).unwrap()).unwrap(), [value]);
    }
}
