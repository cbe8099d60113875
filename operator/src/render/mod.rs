//! `wsgate-operator render`: what the controller would apply, after the
//! checks the API server and the controller would make.
//!
//! Each document of the input is checked as it would be on its way to
//! running pods, and every problem is reported, naming the document and the
//! field:
//!
//! 1. it must be a `wsgate.io/v1alpha1` `WsCluster`;
//! 2. the API server's structural checks of the CRD's schema: types,
//!    bounds, enums, patterns, and unknown fields, which the API server
//!    would silently drop ([`schema`]);
//! 3. the CRD's CEL rules (`x-kubernetes-validations`), evaluated with kube's
//!    `cel` feature after the schema defaults are applied, as the API server
//!    does;
//! 4. the controller's own checks ([`crate::validate::problems`]), which
//!    include the gateway's strict parser on the rendered config file.
//!
//! Only when every document passes is anything printed. The API keys Secret
//! is printed without its data: the operator generates its key when it
//! applies it, and a preview must not hand out a key that works, or a
//! placeholder that looks like one and would be accepted if applied by hand.
//! A managed NATS gets fresh credentials on every `render` (the controller
//! generates them once and keeps them), so those are nobody's placeholder.

mod schema;

#[cfg(test)]
mod tests;

use wsgate_crds::WsCluster;

use crate::resources::{self, Settings};

/// Annotation put on the API keys Secret `render` prints, in place of its
/// data.
pub const REDACTED_ANNOTATION: &str = "wsgate.io/render";

/// What [`REDACTED_ANNOTATION`] says.
pub const REDACTED_NOTE: &str =
    "data left out: the operator generates it when it applies this Secret";

/// Why `render` printed nothing.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// The input is not YAML.
    #[error("not YAML: {0}")]
    Yaml(#[source] yaml_serde::Error),

    /// The input holds no document.
    #[error("no WsCluster in the input")]
    Empty,

    /// Documents that the API server or the controller would refuse.
    #[error("{}", invalid_message(.0))]
    Invalid(Vec<Refusal>),

    /// Building the children of a valid document failed.
    #[error("{document}: {source}")]
    Build {
        /// Which document.
        document: String,
        /// What failed.
        #[source]
        source: Box<crate::Error>,
    },

    /// Printing a child as YAML failed.
    #[error("print {document}: {source}")]
    Print {
        /// Which document.
        document: String,
        /// What failed.
        #[source]
        source: yaml_serde::Error,
    },
}

/// The problems of one document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// `document N` (1-based), with the WsCluster's name when it has one.
    pub document: String,
    /// Each problem as `field: what is wrong`.
    pub problems: Vec<String>,
}

fn invalid_message(refusals: &[Refusal]) -> String {
    let mut message = String::new();
    for (index, refusal) in refusals.iter().enumerate() {
        if index > 0 {
            message.push('\n');
        }
        message.push_str(&format!("{} is invalid:", refusal.document));
        for problem in &refusal.problems {
            message.push_str(&format!("\n  - {problem}"));
        }
    }
    message
}

/// What `render` prints for the manifests in `text` (one or more YAML
/// documents, each a WsCluster): every child of each, as one YAML document
/// per object, in apply order, the API keys Secret without its data.
///
/// # Errors
///
/// [`RenderError::Invalid`] lists every problem of every document the API
/// server or the controller would refuse; the other variants say why the
/// input could not be read or printed.
pub fn render(text: &str, namespace: &str, settings: &Settings) -> Result<String, RenderError> {
    let documents = documents(text)?;
    if documents.is_empty() {
        return Err(RenderError::Empty);
    }
    let mut valid = Vec::new();
    let mut refusals = Vec::new();
    for (index, document) in documents.iter().enumerate() {
        let label = label(index, document);
        match check(document, namespace) {
            Ok(wsc) => valid.push((label, wsc)),
            Err(problems) => refusals.push(Refusal {
                document: label,
                problems,
            }),
        }
    }
    if !refusals.is_empty() {
        return Err(RenderError::Invalid(refusals));
    }
    let mut out = String::new();
    for (document, wsc) in valid {
        print(&document, &wsc, settings, &mut out)?;
    }
    Ok(out)
}

/// The non-empty documents of `text`.
fn documents(text: &str) -> Result<Vec<serde_json::Value>, RenderError> {
    use serde::Deserialize;
    let mut documents = Vec::new();
    for document in yaml_serde::Deserializer::from_str(text) {
        let value = serde_json::Value::deserialize(document).map_err(RenderError::Yaml)?;
        if !value.is_null() {
            documents.push(value);
        }
    }
    Ok(documents)
}

/// `document N (kind name)` for messages.
fn label(index: usize, document: &serde_json::Value) -> String {
    let kind = document["kind"].as_str().unwrap_or("object");
    match document["metadata"]["name"].as_str() {
        Some(name) => format!("document {} ({kind} {name})", index + 1),
        None => format!("document {}", index + 1),
    }
}

/// The WsCluster `document` holds, in `namespace` unless it names one, or
/// every problem the API server and the controller would find.
fn check(document: &serde_json::Value, namespace: &str) -> Result<WsCluster, Vec<String>> {
    let api_version = document["apiVersion"].as_str().unwrap_or_default();
    let kind = document["kind"].as_str().unwrap_or_default();
    let expected_api_version = format!("{}/{}", wsgate_crds::GROUP, wsgate_crds::VERSION);
    if kind != "WsCluster" || api_version != expected_api_version {
        return Err(vec![format!(
            "apiVersion/kind: {api_version:?}/{kind:?} is not a WsCluster: render takes `apiVersion: {expected_api_version}`, `kind: WsCluster`"
        )]);
    }

    let crd = wsgate_crds::crd();
    let schema = crd
        .spec
        .versions
        .iter()
        .find(|version| version.name == wsgate_crds::VERSION)
        .and_then(|version| version.schema.as_ref())
        .and_then(|schema| schema.open_api_v3_schema.as_ref())
        .and_then(|schema| serde_json::to_value(schema).ok())
        .unwrap_or_default();

    let mut problems = schema::problems(&schema, document);
    if document["metadata"]["name"]
        .as_str()
        .is_none_or(str::is_empty)
    {
        problems.push("metadata.name: required".to_owned());
    }
    if let Err(failures) = kube::core::cel::Validator::new().validate(&schema, document, None) {
        problems.extend(failures.iter().map(ToString::to_string));
    }

    let mut wsc: WsCluster = match serde_json::from_value(document.clone()) {
        Ok(wsc) => wsc,
        Err(error) => {
            // The structural problems above say where, when there are any.
            if problems.is_empty() {
                problems.push(format!("spec: {error}"));
            }
            return Err(problems);
        }
    };
    if wsc.metadata.namespace.is_none() {
        wsc.metadata.namespace = Some(namespace.to_owned());
    }
    // The controller's checks, less those a CEL rule already reported.
    for problem in crate::validate::problems(&wsc) {
        // A field the schema or a CEL rule already refused is reported once.
        let field = problem.split_once(": ").map(|(field, _)| field);
        let reported = problems.iter().any(|known| {
            known.ends_with(&problem)
                || field.is_some_and(|field| {
                    known.starts_with(&format!("spec.{field}: "))
                        || known.starts_with(&format!("{field}: "))
                })
        });
        if !reported {
            problems.push(problem);
        }
    }
    if problems.is_empty() {
        Ok(wsc)
    } else {
        Err(problems)
    }
}

/// Appends every child of `wsc` (from `document`) to `out`, one YAML
/// document each.
fn print(
    document: &str,
    wsc: &WsCluster,
    settings: &Settings,
    out: &mut String,
) -> Result<(), RenderError> {
    let build = |source: crate::Error| RenderError::Build {
        document: document.to_owned(),
        source: Box::new(source),
    };
    let mut wsc = wsc.clone();
    if wsc.metadata.uid.is_none() {
        // Owner references need a uid; the API server assigns the real one.
        wsc.metadata.uid = Some("00000000-0000-0000-0000-000000000000".to_owned());
    }
    // The API keys Secret's data is dropped below; its builder needs a value.
    let api_keys = resources::api_keys_file("");
    let nats_credentials = resources::nats::managed_spec(&wsc)
        .map(|_| resources::nats::NatsCredentials::generate())
        .transpose()
        .map_err(|error| build(error.into()))?;
    let mut children =
        resources::children(&wsc, settings, &api_keys, nats_credentials.as_ref()).map_err(build)?;
    redact(&mut children.api_keys_secret);
    for value in children.to_values().map_err(build)? {
        out.push_str("---\n");
        out.push_str(
            &yaml_serde::to_string(&value).map_err(|source| RenderError::Print {
                document: document.to_owned(),
                source,
            })?,
        );
    }
    Ok(())
}

/// Drops a Secret's data, and says so in an annotation.
fn redact(secret: &mut k8s_openapi::api::core::v1::Secret) {
    secret.data = None;
    secret.string_data = None;
    secret
        .metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert(REDACTED_ANNOTATION.to_owned(), REDACTED_NOTE.to_owned());
}
