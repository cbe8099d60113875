//! Leader election on a Lease (kube-lease-manager), so that two operator
//! replicas never reconcile at once.
//!
//! A replica waits until it holds the Lease, then runs the controller. If it
//! loses the Lease it cancels the shutdown token and exits; the pod restarts
//! as a standby.

use kube::Client;
use kube_lease_manager::LeaseManagerBuilder;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::args::RunArgs;

/// Holds leadership while alive.
pub struct Leadership {
    task: JoinHandle<()>,
}

impl Drop for Leadership {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Waits until this replica holds the Lease; then watches it, cancelling
/// `shutdown` when leadership is lost.
///
/// # Errors
///
/// When the lease manager cannot be built, or `shutdown` fires first.
pub async fn acquire(
    client: Client,
    args: &RunArgs,
    shutdown: CancellationToken,
) -> anyhow::Result<Leadership> {
    let identity = args
        .identity
        .clone()
        .unwrap_or_else(crate::resources::generate_api_key);
    let manager = LeaseManagerBuilder::new(client, &args.lease_name)
        .with_namespace(&args.lease_namespace)
        .with_identity(&identity)
        .with_duration(15)
        .with_grace(5)
        .build()
        .await?;
    let (mut channel, manager_task) = manager.watch().await;
    info!(lease = %args.lease_name, %identity, "waiting for leadership");
    loop {
        if *channel.borrow_and_update() {
            break;
        }
        tokio::select! {
            changed = channel.changed() => changed?,
            () = shutdown.cancelled() => anyhow::bail!("shut down before becoming leader"),
        }
    }
    info!("leading");
    let task = tokio::spawn(async move {
        loop {
            if channel.changed().await.is_err() || !*channel.borrow_and_update() {
                warn!("lost leadership, shutting down");
                shutdown.cancel();
                break;
            }
        }
        drop(channel);
        let _ = manager_task.await;
    });
    Ok(Leadership { task })
}
