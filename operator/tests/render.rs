//! The real `wsgate-operator render` binary on files: exit status, stdout
//! and stderr, as a user sees them.

use std::path::PathBuf;
use std::process::{Command, Output};

const HEAD: &str = "apiVersion: wsgate.io/v1alpha1\nkind: WsCluster\nmetadata:\n  name: chat\n";

/// A WsCluster `chat` with a working HS256 auth and `extra` appended to its
/// spec (YAML indented by two spaces).
fn manifest(extra: &str) -> String {
    format!("{HEAD}spec:\n  auth:\n    jwtSecret: {{name: chat-jwt, key: secret}}\n{extra}")
}

/// Writes `text` to a file named `name` in the test's scratch directory.
fn file(name: &str, text: &str) -> PathBuf {
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("render-cli")
        .join(name);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, text).unwrap();
    path
}

/// Runs `wsgate-operator render -f path`.
fn render(path: &std::path::Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_wsgate-operator"))
        .arg("render")
        .arg("-f")
        .arg(path)
        .env_remove("WSGATE_OPERATOR_GATEWAY_IMAGE")
        .output()
        .unwrap()
}

fn examples() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

/// Each refusal of issue 19 exits non-zero, prints nothing on stdout, and
/// names the file, the document and the field on stderr.
#[test]
fn render_refuses_each_invalid_manifest_with_a_message_and_a_failure_status() {
    let cases = [
        (
            "replicas-without-nats",
            manifest("  replicas: 3\n"),
            "without nats every pod is a separate single node",
        ),
        (
            "ingress-and-route",
            manifest("  ingress: {host: a.example.com}\n  httpRoute: {parentRefs: [{name: gw}]}\n"),
            "set either ingress or httpRoute, not both",
        ),
        (
            "no-auth",
            format!("{HEAD}spec: {{}}\n"),
            "auth: set jwtSecret, jwtPublicKey or jwks",
        ),
        (
            "bad-room-pattern",
            manifest("    userRooms: [\"chat:**:x\"]\n"),
            "room pattern \"chat:**:x\" is invalid",
        ),
        (
            "heartbeat",
            manifest("  limits: {heartbeatMs: 30000, heartbeatTimeoutMs: 20000}\n"),
            "limits.heartbeatTimeoutMs must be greater than limits.heartbeatMs",
        ),
        (
            "nats-http",
            manifest("  nats: {url: \"http://nats:4222\"}\n"),
            "spec.nats.url: nats.url must be comma-separated",
        ),
        (
            "ingress-path",
            manifest("  ingress: {path: ws}\n"),
            "spec.ingress.path: ingress.path must start with /",
        ),
        (
            "empty-parent-refs",
            manifest("  httpRoute: {parentRefs: []}\n"),
            "httpRoute.parentRefs needs at least one Gateway",
        ),
        (
            "kind-foo",
            "apiVersion: wsgate.io/v1alpha1\nkind: Foo\nmetadata: {name: chat}\n".to_owned(),
            "is not a WsCluster",
        ),
        (
            "typo",
            manifest("  replica: 2\n"),
            "spec.replica: unknown field",
        ),
        (
            "api-keys-clash",
            manifest("    apiKeysSecret: {name: chat-api-keys, key: keys}\n"),
            "auth.apiKeysSecret: \"chat-api-keys\" is the Secret the operator makes",
        ),
    ];
    for (name, text, expected) in cases {
        let path = file(&format!("{name}.yaml"), &text);
        let output = render(&path);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{name}: exited 0\n{stderr}");
        assert!(output.stdout.is_empty(), "{name}: printed a manifest");
        assert!(
            stderr.contains(&format!("{}: document 1 ", path.display())),
            "{name}: file and document not named:\n{stderr}"
        );
        assert!(
            stderr.contains(expected),
            "{name}: expected {expected:?} in:\n{stderr}"
        );
    }
}

/// A multi-document file renders every document; one invalid document
/// fails the whole file, naming that document.
#[test]
fn render_handles_multi_document_files() {
    let first = manifest("");
    let second = first.replace("name: chat\n", "name: lobby\n");
    let path = file("two.yaml", &format!("{first}---\n{second}"));
    let output = render(&path);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("name: chat-config") && stdout.contains("name: lobby-config"));

    let bad = second.replace("spec:\n", "spec:\n  replicas: 3\n");
    let path = file("two-bad.yaml", &format!("{first}---\n{bad}"));
    let output = render(&path);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(output.stdout.is_empty());
    assert!(
        stderr.contains("document 2 (WsCluster lobby) is invalid"),
        "{stderr}"
    );
}

/// Every example in examples/ renders, exits 0, and prints no API key.
#[test]
fn every_example_renders() {
    let mut count = 0;
    for entry in std::fs::read_dir(examples()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|extension| extension != "yaml") {
            continue;
        }
        count += 1;
        let output = render(&path);
        assert!(
            output.status.success(),
            "{}: {}",
            path.display(),
            String::from_utf8_lossy(&output.stderr)
        );
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            stdout.contains("\nkind: Deployment\n"),
            "{}",
            path.display()
        );
        for document in yaml_serde::Deserializer::from_str(&stdout) {
            let value = <serde_json::Value as serde::Deserialize>::deserialize(document).unwrap();
            let name = value["metadata"]["name"].as_str().unwrap_or_default();
            if value["kind"] == "Secret" && name.ends_with("-api-keys") {
                assert!(value.get("data").is_none(), "{}: {value}", path.display());
            }
        }
    }
    assert!(count >= 3, "examples/ has {count} manifests");
}
