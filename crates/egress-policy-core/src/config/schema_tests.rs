//! The JSON Schema and the README's configuration reference, both from these types' doc
//! comments.

use super::*;

const CHECKED_IN: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../manifests/plugin-config.schema.json"
);

/// The JSON Schema users validate against, generated from these types and their doc
/// comments (one source of truth): `EGRESS_WRITE_SCHEMA=1 cargo test -p egress-policy-core
/// schema` writes it.
fn generated() -> String {
    let mut schema = schemars::schema_for!(PluginConfig);
    schema.insert(
        "$id".into(),
        "https://egress-policy.dev/plugin-config.schema.json".into(),
    );
    schema.insert("title".into(), "egress-policy plugin configuration".into());
    serde_json::to_string_pretty(&schema).unwrap() + "\n"
}

#[test]
fn the_checked_in_schema_is_generated_from_the_config_types() {
    let generated = generated();
    if std::env::var_os("EGRESS_WRITE_SCHEMA").is_some() {
        std::fs::write(CHECKED_IN, &generated).unwrap();
    }
    assert_eq!(
        std::fs::read_to_string(CHECKED_IN).unwrap(),
        generated,
        "regenerate: EGRESS_WRITE_SCHEMA=1 cargo test -p egress-policy-core schema"
    );
}

/// The rows of a README reference table (`| field | default | meaning |`) for the type at
/// `schema`, each field's row from its doc comment: the meaning, then `Default: X.` or
/// `Required.` as its last sentence. Types in `leaves` are one row, not their fields.
fn reference_rows(
    root: &serde_json::Value,
    schema: &serde_json::Value,
    prefix: &str,
    leaves: &[&str],
    rows: &mut Vec<String>,
) {
    let resolve = |node: &serde_json::Value| -> (serde_json::Value, Option<String>) {
        match node.get("$ref").and_then(serde_json::Value::as_str) {
            Some(reference) => {
                let name = reference.rsplit('/').next().unwrap_or_default().to_owned();
                (root["$defs"][&name].clone(), Some(name))
            }
            None => (node.clone(), None),
        }
    };
    let Some(properties) = schema
        .get("properties")
        .and_then(serde_json::Value::as_object)
    else {
        return;
    };
    for (name, field) in properties {
        let path = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}.{name}")
        };
        let description = field["description"]
            .as_str()
            .unwrap_or_else(|| panic!("{path} has no doc comment"))
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        let (meaning, default) = if let Some(meaning) = description.strip_suffix(" Required.") {
            (meaning.to_owned(), "required".to_owned())
        } else {
            let at = description
                .rfind(" Default: ")
                .unwrap_or_else(|| panic!("{path}: no `Default: X.` at the end: {description}"));
            let default = description[at + 10..].strip_suffix('.').unwrap_or_else(|| {
                panic!("{path}: the default does not end with a period: {description}")
            });
            (description[..at].to_owned(), default.to_owned())
        };
        let meaning = meaning.strip_suffix('.').unwrap_or(&meaning).to_owned();
        // What the field holds: an object of its own, a map or a list of objects, or a leaf.
        let (inner, inner_name) = resolve(field);
        let (child, child_path) = if let Some(items) = inner.get("items") {
            (resolve(items), format!("{path}[]"))
        } else if let Some(values) = inner.get("additionalProperties").filter(|v| v.is_object()) {
            (resolve(values), format!("{path}.NAME"))
        } else {
            ((inner.clone(), inner_name.clone()), path.clone())
        };
        let descend = child.0.get("properties").is_some()
            && !child
                .1
                .as_deref()
                .is_some_and(|name| leaves.contains(&name));
        // A list or map of objects is named by its elements (`rules[]`, `lists.NAME`), and so
        // is a map of leaf objects (`headers.NAME`).
        let named_elements = child.1.is_some() && child_path != path;
        let shown = if named_elements {
            child_path.clone()
        } else {
            path.clone()
        };
        rows.push(format!("| `{shown}` | {default} | {meaning} |"));
        if descend {
            reference_rows(root, &child.0, &child_path, leaves, rows);
        }
    }
}

/// The README's configuration reference and its remote-list table are the doc comments of
/// these types: a test fails until the README says what the types say.
#[test]
fn the_readme_reference_is_the_doc_comments_of_the_config_types() {
    let schema = serde_json::to_value(schemars::schema_for!(PluginConfig)).unwrap();
    let mut main = Vec::new();
    reference_rows(
        &schema,
        &schema,
        "",
        &["StringMatchConfig", "DenyReplyConfig", "ProviderConfig"],
        &mut main,
    );
    let mut provider = Vec::new();
    reference_rows(
        &schema,
        &schema["$defs"]["ProviderConfig"],
        "provider",
        &[],
        &mut provider,
    );
    let readme_rows = |heading: &str| crate::stripped::readme_table_rows(heading);
    if std::env::var_os("EGRESS_PRINT_REFERENCE").is_some() {
        println!("{}\n\n{}", main.join("\n"), provider.join("\n"));
    }
    assert_eq!(readme_rows("## Configuration reference"), main);
    assert_eq!(readme_rows("## Remote lists"), provider);
}
