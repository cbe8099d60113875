//! Tests of `render`'s checks and output.

use super::*;

const HEAD: &str = "apiVersion: wsgate.io/v1alpha1\nkind: WsCluster\nmetadata:\n  name: chat\n";

/// A WsCluster `chat` with a working HS256 auth and `extra` appended to its
/// spec (YAML indented by two spaces).
fn manifest(extra: &str) -> String {
    format!("{HEAD}spec:\n  auth:\n    jwtSecret: {{name: chat-jwt, key: secret}}\n{extra}")
}

/// The problems `render` reports for `text`, joined; panics if it renders.
fn refusal(text: &str) -> String {
    match render(text, "default", &Settings::default()) {
        Err(RenderError::Invalid(refusals)) => {
            assert!(!refusals.is_empty());
            RenderError::Invalid(refusals).to_string()
        }
        Err(other) => panic!("expected a refusal, got {other}"),
        Ok(out) => panic!("rendered an invalid manifest:\n{text}\n---\n{out}"),
    }
}

/// Every case of issue 19 is refused with a message naming the field.
#[test]
fn each_invalid_spec_is_refused_naming_the_field() {
    let cases = [
        (
            manifest("  replicas: 3\n"),
            "without nats every pod is a separate single node",
        ),
        (
            manifest("  ingress: {host: a.example.com}\n  httpRoute: {parentRefs: [{name: gw}]}\n"),
            "set either ingress or httpRoute, not both",
        ),
        (
            format!("{HEAD}spec: {{}}\n"),
            "auth: set jwtSecret, jwtPublicKey or jwks",
        ),
        (
            manifest("    userRooms: [\"chat:**:x\"]\n"),
            "auth.userRooms: room pattern \"chat:**:x\" is invalid",
        ),
        (
            manifest("  limits: {heartbeatMs: 30000, heartbeatTimeoutMs: 20000}\n"),
            "limits.heartbeatTimeoutMs must be greater than limits.heartbeatMs",
        ),
        (
            manifest("  nats: {url: \"http://nats:4222\"}\n"),
            "spec.nats.url: nats.url must be comma-separated",
        ),
        (
            manifest("  ingress: {path: ws}\n"),
            "spec.ingress.path: ingress.path must start with /",
        ),
        (
            manifest("  httpRoute: {parentRefs: []}\n"),
            "httpRoute.parentRefs needs at least one Gateway",
        ),
        (
            "apiVersion: wsgate.io/v1alpha1\nkind: Foo\nmetadata: {name: chat}\n".to_owned(),
            "is not a WsCluster",
        ),
        (
            manifest("  limits: {sendQueue: 0}\n"),
            "spec.limits.sendQueue: 0 is below the minimum of 1",
        ),
        (
            manifest("  replicas: two\n"),
            "spec.replicas: must be an integer",
        ),
        (
            manifest("  logFormat: yaml\n"),
            "spec.logFormat: \"yaml\" is not one of",
        ),
        (
            manifest("    apiKeysSecret: {name: chat-api-keys, key: keys}\n"),
            "auth.apiKeysSecret: \"chat-api-keys\" is the Secret the operator makes",
        ),
    ];
    for (text, expected) in cases {
        let message = refusal(&text);
        assert!(
            message.contains(expected),
            "{text}\nexpected {expected:?} in:\n{message}"
        );
        assert!(message.starts_with("document 1 "), "{message}");
        // Named as the user wrote it, never as the rendered gateway key, and once.
        assert!(!message.contains("user_rooms"), "{message}");
    }
    let bad_url = refusal(&manifest("  nats: {url: \"http://nats:4222\"}\n"));
    assert_eq!(
        bad_url.lines().filter(|line| line.contains("nats")).count(),
        1,
        "a bad nats.url is reported once:\n{bad_url}"
    );
}

/// Unknown fields are errors naming them, at any depth and in metadata,
/// where the API server would drop them silently.
#[test]
fn unknown_fields_are_refused_by_name() {
    let message = refusal(&manifest(
        "  replica: 2\n  limits: {maxConection: 5}\n  nats: {url: \"nats://n:4222\", pingInterval: 1}\n",
    ));
    for field in [
        "spec.replica",
        "spec.limits.maxConection",
        "spec.nats.pingInterval",
    ] {
        assert!(
            message.contains(&format!("{field}: unknown field")),
            "{field} not named in:\n{message}"
        );
    }
    let message = refusal(
        "apiVersion: wsgate.io/v1alpha1\nkind: WsCluster\nmetadata: {name: chat, namespce: prod}\nspec: {auth: {allowAnonymous: true}}\n",
    );
    assert!(
        message.contains("metadata.namespce: unknown field"),
        "{message}"
    );
    let message = refusal(&format!(
        "{HEAD}spec: {{auth: {{allowAnonymous: true}}}}\nspecs: {{}}\n"
    ));
    assert!(message.contains("specs: unknown field"), "{message}");
}

/// Free-form maps (labels, annotations, resources) are not unknown fields.
#[test]
fn free_form_maps_are_accepted() {
    let text = manifest(
        "  podAnnotations: {a.example.com/x: y}\n  resources: {requests: {cpu: 100m, memory: 1Gi}}\n  nodeSelector: {disk: ssd}\n",
    );
    render(&text, "default", &Settings::default()).unwrap();
}

/// Each document of a multi-document file is checked and rendered; errors
/// name the document, and nothing is printed when one is invalid.
#[test]
fn multi_document_files_are_checked_and_rendered_per_document() {
    let first = manifest("");
    let second = first.replace("name: chat\n", "name: lobby\n");
    let both = format!("{first}---\n{second}---\n");
    let out = render(&both, "default", &Settings::default()).unwrap();
    assert!(out.contains("name: chat-config"), "{out}");
    assert!(out.contains("name: lobby-config"), "{out}");

    let bad = second.replace("spec:\n", "spec:\n  replicas: 3\n");
    let message = refusal(&format!("{first}---\n{bad}"));
    assert!(
        message.starts_with("document 2 (WsCluster lobby) is invalid:"),
        "{message}"
    );
    assert!(!message.contains("document 1"), "{message}");
}

/// An empty input is an error, not an empty success.
#[test]
fn an_input_without_documents_is_refused() {
    let error = render("---\n", "default", &Settings::default()).unwrap_err();
    assert!(matches!(error, RenderError::Empty), "{error}");
    let error = render("a: [", "default", &Settings::default()).unwrap_err();
    assert!(matches!(error, RenderError::Yaml(_)), "{error}");
}

/// The API keys Secret is printed without data (no key, not even a
/// placeholder that looks like one), with an annotation saying why.
#[test]
fn the_api_keys_secret_carries_no_data() {
    for text in [
        include_str!("../../../examples/wscluster.yaml"),
        include_str!("../../../examples/wscluster-managed-nats.yaml"),
    ] {
        let out = render(text, "default", &Settings::default()).unwrap();
        let mut found = false;
        for document in yaml_serde::Deserializer::from_str(&out) {
            use serde::Deserialize;
            let value = serde_json::Value::deserialize(document).unwrap();
            if value["kind"] == "Secret" && value["metadata"]["name"] == "chat-api-keys" {
                found = true;
                assert!(value.get("data").is_none(), "{value}");
                assert!(value.get("stringData").is_none(), "{value}");
                assert_eq!(
                    value["metadata"]["annotations"][REDACTED_ANNOTATION],
                    REDACTED_NOTE
                );
            }
        }
        assert!(found, "{out}");
        assert!(!out.contains("generated-by-the-operator"), "{out}");
    }
}

/// Every example renders.
#[test]
fn every_example_renders() {
    for text in [
        include_str!("../../../examples/wscluster.yaml"),
        include_str!("../../../examples/wscluster-full.yaml"),
        include_str!("../../../examples/wscluster-managed-nats.yaml"),
    ] {
        render(text, "default", &Settings::default()).unwrap();
    }
}

/// The structural walker checks every keyword the API server does, on a
/// hand-written schema: types, int-or-string, bounds (exclusive too),
/// lengths, item counts, enums, patterns, required fields, free-form maps
/// and preserved unknown fields.
#[test]
fn structural_checks_cover_each_schema_keyword() {
    let schema = serde_json::json!({
        "type": "object",
        "required": ["spec"],
        "properties": {"spec": {
            "type": "object",
            "required": ["name"],
            "properties": {
                "name": {"type": "string", "minLength": 2, "maxLength": 4, "pattern": "^[a-z]+$"},
                "count": {"type": "integer", "minimum": 1, "maximum": 5},
                "ratio": {"type": "number", "minimum": 0, "exclusiveMinimum": true},
                "size": {"x-kubernetes-int-or-string": true},
                "mode": {"type": "string", "enum": ["a", "b"]},
                "tags": {"type": "array", "maxItems": 1, "items": {"type": "string"}},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "raw": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                "optional": {"type": "string", "nullable": true}
            }
        }}
    });
    let check = |spec: serde_json::Value| {
        schema::problems(
            &schema,
            &serde_json::json!({"metadata": {"name": "x"}, "spec": spec}),
        )
    };
    let fine = serde_json::json!({
        "name": "abc", "count": 5, "ratio": 0.5, "size": "1Gi", "mode": "a", "tags": ["t"],
        "labels": {"any.key/x": "v"}, "raw": {"whatever": {"deep": 1}}, "optional": null
    });
    assert_eq!(check(fine.clone()), Vec::<String>::new());
    let mut size_as_integer = fine.clone();
    size_as_integer["size"] = 10.into();
    assert_eq!(check(size_as_integer), Vec::<String>::new());

    let cases = [
        (
            serde_json::json!({"name": "a"}),
            "spec.name: needs at least 2 characters, has 1",
        ),
        (
            serde_json::json!({"name": "abcde"}),
            "spec.name: allows at most 4 characters, has 5",
        ),
        (
            serde_json::json!({"name": "AB"}),
            "spec.name: \"AB\" does not match \"^[a-z]+$\"",
        ),
        (
            serde_json::json!({"name": "ab", "count": 0}),
            "spec.count: 0 is below the minimum of 1",
        ),
        (
            serde_json::json!({"name": "ab", "count": 6}),
            "spec.count: 6 is above the maximum of 5",
        ),
        (
            serde_json::json!({"name": "ab", "count": 1.5}),
            "spec.count: must be an integer",
        ),
        (
            serde_json::json!({"name": "ab", "ratio": 0}),
            "spec.ratio: 0 must be greater than 0",
        ),
        (
            serde_json::json!({"name": "ab", "size": true}),
            "spec.size: must be an integer or a string",
        ),
        (
            serde_json::json!({"name": "ab", "mode": "c"}),
            "spec.mode: \"c\" is not one of \"a\", \"b\"",
        ),
        (
            serde_json::json!({"name": "ab", "tags": ["a", "b"]}),
            "spec.tags: allows at most 1 items, has 2",
        ),
        (
            serde_json::json!({"name": "ab", "tags": [1]}),
            "spec.tags[0]: must be a string",
        ),
        (
            serde_json::json!({"name": "ab", "labels": {"k": 1}}),
            "spec.labels.k: must be a string",
        ),
        (
            serde_json::json!({"name": "ab", "nmae": "x"}),
            "spec.nmae: unknown field",
        ),
        (serde_json::json!({}), "spec.name: required"),
        (serde_json::json!([]), "spec: must be a mapping"),
    ];
    for (spec, expected) in cases {
        let found = check(spec.clone());
        assert!(
            found.iter().any(|problem| problem.starts_with(expected)),
            "{spec}: expected {expected:?}, got {found:?}"
        );
    }
    assert_eq!(
        schema::problems(&schema, &serde_json::json!({"metadata": {}})),
        vec!["spec: required".to_owned()]
    );
}
