//! wsgate: a WebSocket gateway whose rooms span replicas over NATS.
//!
//! # Layout
//! - [`protocol`]: client frames parsed and validated, server frames written (docs/protocol.md).
//! - [`session`]: one connection: reader loop, writer task, the connection's own commands.
//! - [`command`]: the rules of the commands every transport serves, written once.
//!   [`ratelimit`]: the publish budget.
//! - [`hub`]: this node's rooms and their local members, connections and users.
//! - [`outbox`]: a connection's bounded outbound queue, which rooms and replies fill.
//!   [`heartbeat`]: one task asking every connection to ping its client in turn.
//! - [`broker`]: how messages cross nodes: [`broker::LocalBroker`] (single node) and
//!   [`broker::NatsBroker`], behind the [`broker::Broker`] trait.
//! - [`auth`]: JWT verification, room patterns, API keys, key reloading.
//! - [`app`]: shared state, routers and the WebSocket handshake; [`api`]: the backend HTTP API.
//! - [`assets`]: the browser client and the demo page. [`origin`]: the Origin allow-list. [`metrics`]: Prometheus metrics.
//! - [`listener`]: the public listener's accept loop, bounding sockets before their handshake;
//!   [`socket`]: one accepted socket, its buffers and the writer's direct path for frames;
//!   [`peer`]: the client address of an upgrade and the connections per address.
//! - [`pusher`]: Pusher Channels compatibility, a second transport over the same hub and broker.
//! - [`shutdown`]: the signal and the drain; `server`: wiring it all from a [`Config`].
//! - [`rebalance`]: shedding connections above the fleet's mean load after a scale-out.
//!
//! Data flows client frame → `protocol` → `session` (→ `command`) → `hub`/`broker` → every node's
//! `hub` with members → each member's bounded queue → its writer task.

pub mod api;
pub mod app;
pub mod assets;
pub mod auth;
pub mod broker;
pub mod command;
pub mod heartbeat;
pub mod hub;
pub mod listener;
pub mod metrics;
pub mod origin;
pub mod outbox;
pub mod peer;
pub mod protocol;
pub mod pusher;
pub mod ratelimit;
pub mod rebalance;
mod server;
pub mod session;
pub mod shutdown;
pub mod socket;

pub use server::{init_tracing, run};
pub use wsgate_config::{Args, Config};
