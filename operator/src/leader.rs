//! Leader election on a Lease (kube-lease-manager), so that two operator
//! replicas never reconcile at once.
//!
//! A replica waits until it holds the Lease, then runs the controller. If it
//! loses the Lease it cancels the shutdown token and exits; the pod restarts
//! as a standby. On shutdown it releases the Lease, so a standby takes over
//! at once.

use std::time::Duration;

use kube::Client;
use kube_lease_manager::LeaseManagerBuilder;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::args::RunArgs;

/// How long [`Leadership::release`] waits for the Lease to be released.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(5);

/// Holds leadership while alive; [`Leadership::release`] gives it up.
pub struct Leadership {
    /// Follows the Lease; ends (releasing it) when `stop` fires.
    task: Option<JoinHandle<()>>,
    /// Asks `task` to release the Lease.
    stop: CancellationToken,
}

impl Leadership {
    /// Releases the Lease (clears its holder), so a standby takes over at
    /// once instead of after the Lease's 15 s duration: an upgrade fails
    /// over in about a second. Waits at most [`RELEASE_TIMEOUT`]; a failure
    /// is logged, the Lease then simply expires.
    pub async fn release(mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take()
            && tokio::time::timeout(RELEASE_TIMEOUT, task).await.is_err()
        {
            warn!("lease not released in time; it expires instead");
        }
    }
}

impl Drop for Leadership {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
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
    let stop = CancellationToken::new();
    let released = stop.clone();
    let task = tokio::spawn(async move {
        loop {
            tokio::select! {
                () = released.cancelled() => break,
                changed = channel.changed() => {
                    if changed.is_err() || !*channel.borrow_and_update() {
                        warn!("lost leadership, shutting down");
                        shutdown.cancel();
                        break;
                    }
                }
            }
        }
        // Closing the channel makes the manager release the Lease and end.
        drop(channel);
        match manager_task.await {
            Ok(Ok(_)) => info!("lease released"),
            Ok(Err(error)) => warn!(%error, "lease release failed"),
            Err(error) => warn!(%error, "lease manager task failed"),
        }
    });
    Ok(Leadership {
        task: Some(task),
        stop,
    })
}
