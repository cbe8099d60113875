//! The API server's structural checks of a custom resource, client side.
//!
//! Before its CEL rules run, the API server checks an object against the
//! CRD's structural OpenAPI schema: each value's `type` (with `nullable` and
//! `x-kubernetes-int-or-string`), `minimum`/`maximum`, `minLength`/
//! `maxLength`, `minItems`/`maxItems`, `enum`, `pattern` and `required`.
//! Fields the schema does not name are pruned silently there; here they are
//! errors, because a typo (`replica: 2`) would otherwise vanish.
//!
//! This is the Kubernetes dialect of OpenAPI v3 (`nullable`, the
//! `x-kubernetes-*` extensions, pruning instead of `additionalProperties:
//! false`), which general JSON Schema validators do not speak, hence this
//! small walker; the CEL rules themselves are evaluated by kube's `cel`
//! feature (see [`super`]).

use serde_json::Value;

/// Fields of `metadata` (ObjectMeta) a manifest may carry.
const METADATA_FIELDS: &[&str] = &[
    "name",
    "generateName",
    "namespace",
    "labels",
    "annotations",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "finalizers",
    "ownerReferences",
    "managedFields",
    "selfLink",
];

/// Every structural problem of `object` against the CRD's root `schema`
/// (the version's `openAPIV3Schema`), each as `path: what is wrong`.
pub fn problems(schema: &Value, object: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    let Some(fields) = object.as_object() else {
        problems.push("the document is not a mapping".to_owned());
        return problems;
    };
    let properties = schema.get("properties").and_then(Value::as_object);
    for (key, value) in fields {
        match key.as_str() {
            "apiVersion" | "kind" => {}
            "metadata" => metadata(value, &mut problems),
            _ => match properties.and_then(|properties| properties.get(key)) {
                Some(property) => walk(property, value, key, &mut problems),
                None => problems.push(unknown(key)),
            },
        }
    }
    required(schema, fields, "", &mut problems);
    problems
}

fn unknown(path: &str) -> String {
    format!(
        "{path}: unknown field (the API server would drop it); check its spelling in docs/operator.md"
    )
}

fn metadata(value: &Value, problems: &mut Vec<String>) {
    let Some(fields) = value.as_object() else {
        problems.push("metadata: must be a mapping".to_owned());
        return;
    };
    for key in fields.keys() {
        if !METADATA_FIELDS.contains(&key.as_str()) {
            problems.push(unknown(&format!("metadata.{key}")));
        }
    }
}

/// The `required` fields of `schema` that `fields` lacks.
fn required(
    schema: &Value,
    fields: &serde_json::Map<String, Value>,
    path: &str,
    problems: &mut Vec<String>,
) {
    for name in schema
        .get("required")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        if !fields.contains_key(name) {
            problems.push(format!("{}: required", join(path, name)));
        }
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// Checks `value` at `path` against `schema`, recursively.
fn walk(schema: &Value, value: &Value, path: &str, problems: &mut Vec<String>) {
    if value.is_null() {
        // The API server drops a null of a non-nullable field (and defaults
        // it); a nullable one is kept. Neither is refused.
        return;
    }
    let int_or_string = schema
        .get("x-kubernetes-int-or-string")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    if int_or_string {
        if !(value.is_string() || is_integer(value)) {
            problems.push(format!("{path}: must be an integer or a string"));
        }
        return;
    }
    if let Some(expected) = schema.get("type").and_then(Value::as_str) {
        let matches = match expected {
            "object" => value.is_object(),
            "array" => value.is_array(),
            "string" => value.is_string(),
            "integer" => is_integer(value),
            "number" => value.is_number(),
            "boolean" => value.is_boolean(),
            _ => true,
        };
        if !matches {
            problems.push(format!("{path}: must be {}", article(expected)));
            return;
        }
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !allowed.contains(value)
    {
        let allowed: Vec<String> = allowed.iter().map(Value::to_string).collect();
        problems.push(format!(
            "{path}: {value} is not one of {}",
            allowed.join(", ")
        ));
    }
    match value {
        Value::Number(number) => bounds(schema, number, path, problems),
        Value::String(text) => string(schema, text, path, problems),
        Value::Array(items) => {
            sizes(
                schema,
                items.len(),
                "minItems",
                "maxItems",
                "items",
                path,
                problems,
            );
            if let Some(item_schema) = schema.get("items") {
                for (index, item) in items.iter().enumerate() {
                    walk(item_schema, item, &format!("{path}[{index}]"), problems);
                }
            }
        }
        Value::Object(fields) => object(schema, fields, path, problems),
        Value::Bool(_) | Value::Null => {}
    }
}

fn object(
    schema: &Value,
    fields: &serde_json::Map<String, Value>,
    path: &str,
    problems: &mut Vec<String>,
) {
    let preserve = schema
        .get("x-kubernetes-preserve-unknown-fields")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let properties = schema.get("properties").and_then(Value::as_object);
    let additional = schema.get("additionalProperties").filter(|a| a.is_object());
    for (key, value) in fields {
        let child = join(path, key);
        match (properties.and_then(|p| p.get(key)), additional) {
            (Some(property), _) | (None, Some(property)) => walk(property, value, &child, problems),
            (None, None) if preserve || properties.is_none() => {}
            (None, None) => problems.push(unknown(&child)),
        }
    }
    required(schema, fields, path, problems);
}

fn is_integer(value: &Value) -> bool {
    value.is_i64() || value.is_u64()
}

fn article(type_: &str) -> String {
    match type_ {
        "object" => "a mapping".to_owned(),
        "array" => "a list".to_owned(),
        "integer" => "an integer".to_owned(),
        other => format!("a {other}"),
    }
}

fn bounds(schema: &Value, number: &serde_json::Number, path: &str, problems: &mut Vec<String>) {
    let Some(value) = number.as_f64() else { return };
    let exclusive = |key: &str| schema.get(key).and_then(Value::as_bool).unwrap_or(false);
    if let Some(minimum) = schema.get("minimum").and_then(Value::as_f64) {
        if exclusive("exclusiveMinimum") && value <= minimum {
            problems.push(format!("{path}: {number} must be greater than {minimum}"));
        } else if value < minimum {
            problems.push(format!(
                "{path}: {number} is below the minimum of {minimum}"
            ));
        }
    }
    if let Some(maximum) = schema.get("maximum").and_then(Value::as_f64) {
        if exclusive("exclusiveMaximum") && value >= maximum {
            problems.push(format!("{path}: {number} must be less than {maximum}"));
        } else if value > maximum {
            problems.push(format!(
                "{path}: {number} is above the maximum of {maximum}"
            ));
        }
    }
}

fn string(schema: &Value, text: &str, path: &str, problems: &mut Vec<String>) {
    sizes(
        schema,
        text.chars().count(),
        "minLength",
        "maxLength",
        "characters",
        path,
        problems,
    );
    if let Some(pattern) = schema.get("pattern").and_then(Value::as_str) {
        match regex::Regex::new(pattern) {
            Ok(regex) if regex.is_match(text) => {}
            Ok(_) => problems.push(format!("{path}: {text:?} does not match {pattern:?}")),
            Err(error) => problems.push(format!(
                "{path}: the schema's pattern {pattern:?} is invalid: {error}"
            )),
        }
    }
}

fn sizes(
    schema: &Value,
    size: usize,
    min_key: &str,
    max_key: &str,
    unit: &str,
    path: &str,
    problems: &mut Vec<String>,
) {
    let size = u64::try_from(size).unwrap_or(u64::MAX);
    if let Some(min) = schema.get(min_key).and_then(Value::as_u64)
        && size < min
    {
        problems.push(format!("{path}: needs at least {min} {unit}, has {size}"));
    }
    if let Some(max) = schema.get(max_key).and_then(Value::as_u64)
        && size > max
    {
        problems.push(format!("{path}: allows at most {max} {unit}, has {size}"));
    }
}
