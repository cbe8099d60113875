//! A whole deployment for one test: one gateway on the in-process broker, or one
//! nats-server and N gateways sharing it. Gateways are stopped before the nats-server.

use anyhow::Result;

use crate::gateway::{Gateway, GatewayOptions};
use crate::nats::NatsServer;

/// Which broker and how many replicas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topology {
    /// One gateway without `--nats-url`: the in-process broker.
    Single,
    /// One nats-server and this many gateways (`gw-0`, `gw-1`, ...).
    Nats { replicas: usize },
}

impl Topology {
    /// Three replicas on one nats-server.
    pub const CLUSTER: Self = Self::Nats { replicas: 3 };

    /// How many gateways it has.
    pub fn replicas(self) -> usize {
        match self {
            Self::Single => 1,
            Self::Nats { replicas } => replicas,
        }
    }
}

/// Running processes of one [`Topology`].
#[derive(Debug)]
pub struct Deployment {
    /// Declared first so they drop (stop) before the nats-server.
    pub gateways: Vec<Gateway>,
    pub nats: Option<NatsServer>,
}

impl Deployment {
    /// Starts the processes; every gateway gets `options` with its own node name (and the
    /// NATS URL). Gateways start concurrently.
    ///
    /// # Errors
    /// When any process does not come up (those already started are stopped).
    pub async fn start(topology: Topology, options: GatewayOptions) -> Result<Self> {
        let nats = match topology {
            Topology::Single => None,
            Topology::Nats { .. } => Some(NatsServer::start().await?),
        };
        Self::start_on(nats, topology.replicas(), options).await
    }

    /// One `nats-server -js` (file storage that survives its restart) and `replicas`
    /// gateways on it: the deployment of the history suites.
    ///
    /// # Errors
    /// As [`Deployment::start`].
    pub async fn start_jetstream(replicas: usize, options: GatewayOptions) -> Result<Self> {
        let nats = NatsServer::start_with(crate::NatsOptions { jetstream: true }).await?;
        Self::start_on(Some(nats), replicas, options).await
    }

    /// Starts `replicas` gateways on `nats` (or the in-process broker without one).
    async fn start_on(
        nats: Option<NatsServer>,
        replicas: usize,
        options: GatewayOptions,
    ) -> Result<Self> {
        let starts = (0..replicas).map(|i| {
            let mut options = options.clone().node(format!("gw-{i}"));
            if let Some(nats) = &nats {
                options = options.nats(nats);
            }
            Gateway::start(options)
        });
        let gateways = futures::future::try_join_all(starts).await?;
        Ok(Self { gateways, nats })
    }

    /// Gateway `i`, counted modulo the number of gateways (so a test written for three
    /// replicas runs on one).
    pub fn gateway(&self, i: usize) -> &Gateway {
        &self.gateways[i % self.gateways.len()]
    }

    /// Mutable gateway `i` (modulo the number of gateways).
    pub fn gateway_mut(&mut self, i: usize) -> &mut Gateway {
        let len = self.gateways.len();
        &mut self.gateways[i % len]
    }

    /// `ws://.../ws` of gateway `i` (modulo).
    pub fn ws_url(&self, i: usize) -> String {
        self.gateway(i).ws_url()
    }

    /// How many gateways run.
    pub fn replicas(&self) -> usize {
        self.gateways.len()
    }

    /// The cluster name.
    pub fn cluster(&self) -> &str {
        self.gateways[0].cluster()
    }

    /// The nats-server.
    ///
    /// # Panics
    /// On the single-node topology.
    pub fn nats(&self) -> &NatsServer {
        self.nats
            .as_ref()
            .expect("this deployment has no nats-server")
    }

    /// The nats-server, mutably (to kill and restart it).
    ///
    /// # Panics
    /// On the single-node topology.
    pub fn nats_mut(&mut self) -> &mut NatsServer {
        self.nats
            .as_mut()
            .expect("this deployment has no nats-server")
    }
}
