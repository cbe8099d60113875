//! wsgate-operator: turns `WsCluster` resources into running gateway fleets.
//!
//! Layout, following controller-rs:
//!
//! - [`args`]: the command line: `run` (the controller, default), `crd`
//!   (print the CRD) and `render -f FILE` (print what would be applied).
//! - [`render`]: `render`'s checks (the CRD's schema and CEL rules, then
//!   [`validate`]) and its output.
//! - [`resources`]: pure desired-state builders, one per child kind, no I/O.
//! - [`controller`]: `reconcile`, `error_policy` and the controller's wiring;
//!   server-side apply that skips objects the cache already holds as wanted.
//! - [`status`]: conditions and the status computed from the children.
//! - [`validate`]: checks of a spec the schema accepts but that cannot work
//!   (reported as `Degraded` instead of applied).
//! - [`autoscale`]: the connection-aware autoscaling algorithm (pure).
//! - [`stats`]: reads the gateways' `/api/v1/stats` for status and autoscaling.
//! - [`leader`]: leader election on a Lease.
//! - [`owned_secret`]: the values of the Secrets the operator owns, read on
//!   demand; every other Secret is known by its metadata only.
//! - [`rbac`]: the API permissions the operator uses, one table that the
//!   chart's RBAC is tested against (`wsgate-operator rbac`).
//! - [`runtime`]: the process around the reconciler: caches, watches,
//!   controller, stats poller, shutdown.
//! - [`watch`]: watches over every namespace or the `--watch-namespaces`
//!   list, as one stream per kind.
//! - [`metrics`], [`telemetry`], [`server`]: observability and the
//!   operator's own HTTP endpoints.
//!
//! The `WsCluster` types live in the `wsgate-crds` crate. Tests of the
//! controller run against a mock API server built in `fixtures.rs`
//! (controller-rs's pattern): every request is asserted.

pub mod args;
pub mod autoscale;
pub mod controller;
pub mod leader;
pub mod metrics;
pub mod owned_secret;
pub mod rbac;
pub mod render;
pub mod resources;
pub mod runtime;
pub mod server;
pub mod stats;
pub mod status;
pub mod telemetry;
pub mod validate;
pub mod watch;

#[cfg(test)]
mod fixtures;

pub use args::Args;

/// The field manager of every server-side apply the operator makes.
pub const FIELD_MANAGER: &str = "wsgate-operator";

/// The operator's version, which also picks the default gateway image.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Everything that can fail in the operator's library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A call to the Kubernetes API failed.
    #[error("kubernetes api: {0}")]
    Kube(#[source] kube::Error),

    /// Applying one child object failed.
    #[error("apply {kind} {name}: {source}")]
    Apply {
        /// Kind of the child.
        kind: String,
        /// Name of the child.
        name: String,
        /// What the API server said.
        #[source]
        source: kube::Error,
    },

    /// An object of a child's kind and name exists but is not controlled by
    /// this WsCluster (another WsCluster's child, or the user's own): it is
    /// never adopted or overwritten. Example: WsCluster `foo-admin`'s public
    /// Service against WsCluster `foo`'s admin Service.
    #[error(
        "{kind} {name} exists and is not controlled by this WsCluster ({owner}); rename one of them"
    )]
    NameConflict {
        /// Kind of the child.
        kind: String,
        /// Name of the child.
        name: String,
        /// Who controls the existing object, as `Kind/name`, or `no controller`.
        owner: String,
    },

    /// Deleting a child that the spec no longer wants failed.
    #[error("delete {kind} {name}: {source}")]
    Delete {
        /// Kind of the child.
        kind: String,
        /// Name of the child.
        name: String,
        /// What the API server said.
        #[source]
        source: kube::Error,
    },

    /// Reading a Secret the operator owns (its API key, generated NATS
    /// credentials) failed.
    #[error("read secret {name}: {source}")]
    ReadSecret {
        /// Name of the Secret.
        name: String,
        /// What the API server said.
        #[source]
        source: kube::Error,
    },

    /// Writing the WsCluster's status failed.
    #[error("patch status: {0}")]
    PatchStatus(#[source] kube::Error),

    /// The WsCluster has no namespace or name (a cluster-scoped object was
    /// handed to a namespaced reconciler).
    #[error("wscluster has no {0}")]
    MissingMetadata(&'static str),

    /// An object could not be serialized.
    #[error("serialize: {0}")]
    Serialize(#[from] serde_json::Error),

    /// The reflector caches did not fill (see
    /// [`controller::Stores::wait_until_ready`]).
    #[error("caches not ready: {0}")]
    CacheNotReady(String),

    /// Reading the gateways' stats failed.
    #[error("read stats: {0}")]
    Stats(String),

    /// A WsCluster with `nats.managed` was built without the credentials of
    /// its NATS (a bug in the caller).
    #[error("managed nats needs its credentials")]
    MissingNatsCredentials,

    /// Generating managed NATS credentials failed.
    #[error("nats credentials: {0}")]
    NatsCredentials(#[from] resources::nats::CredentialsError),

    /// Reading or parsing an input file failed (`render -f`).
    #[error("{path}: {message}")]
    Input {
        /// The file.
        path: String,
        /// What went wrong.
        message: String,
    },

    /// `render -f` refused its input: a document the API server or the
    /// controller would refuse, or one that cannot be read.
    #[error("{path}: {source}")]
    Render {
        /// The file (`-`: standard input).
        path: String,
        /// Every problem found.
        #[source]
        source: Box<render::RenderError>,
    },
}

/// The operator's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The reason of the conditions (and of the Warning Event) that report
    /// this error when it stops an apply.
    pub fn condition_reason(&self) -> &'static str {
        match self {
            Error::NameConflict { .. } => wsgate_crds::condition::reason::NAME_CONFLICT,
            _ => wsgate_crds::condition::reason::APPLY_FAILED,
        }
    }

    /// A short, stable label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube",
            Error::Apply { .. } => "apply",
            Error::NameConflict { .. } => "name_conflict",
            Error::Delete { .. } => "delete",
            Error::ReadSecret { .. } => "read_secret",
            Error::PatchStatus(_) => "patch_status",
            Error::MissingMetadata(_) => "missing_metadata",
            Error::Serialize(_) => "serialize",
            Error::CacheNotReady(_) => "cache_not_ready",
            Error::Stats(_) => "stats",
            Error::Input { .. } => "input",
            Error::Render { .. } => "render",
            Error::MissingNatsCredentials => "missing_nats_credentials",
            Error::NatsCredentials(_) => "nats_credentials",
        }
    }
}
