//! [`Ack`]: the outcome of a broker operation that was taken in order and
//! completes later.
//!
//! A `send` must reach the nodes in the order a connection sent it, and a
//! `publish` to a room with history must be stored in that order, but the
//! connection should not wait a cluster round trip for each before reading its
//! next command. So the broker takes such an operation in two steps: the call
//! resolves once the operation is handed over (which fixes its order), and
//! returns an `Ack` that resolves when the nodes have counted or the store has
//! acknowledged. A connection holds its acks while it goes on; the backend API
//! awaits them at once.
//!
//! An `Ack` is polled by whoever waits for it, so taking one costs no task of
//! its own.

use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::future::BoxFuture;

use super::BrokerError;

/// The later outcome of an operation the broker has already taken in order.
#[must_use = "an acknowledgement reports whether the operation succeeded"]
pub struct Ack<T>(State<T>);

enum State<T> {
    /// Known when the operation was taken (the in-process broker, or a failure
    /// before anything was handed over). `None` once taken by a poll.
    Ready(Option<Result<T, BrokerError>>),
    /// Still under way at the broker.
    Later(BoxFuture<'static, Result<T, BrokerError>>),
}

impl<T> Ack<T> {
    /// An outcome known already.
    pub fn ready(result: Result<T, BrokerError>) -> Self {
        Self(State::Ready(Some(result)))
    }

    /// A failure before the operation was handed over.
    pub fn failed(error: BrokerError) -> Self {
        Self::ready(Err(error))
    }

    /// An outcome `future` will give; it borrows nothing, so the caller can hold
    /// it while it goes on.
    pub fn later(future: impl Future<Output = Result<T, BrokerError>> + Send + 'static) -> Self {
        Self(State::Later(Box::pin(future)))
    }

    /// Applies `f` to the outcome's value.
    pub fn map<U>(self, f: impl FnOnce(T) -> U + Send + 'static) -> Ack<U>
    where
        T: Send + 'static,
    {
        match self.0 {
            State::Ready(result) => Ack(State::Ready(result.map(|result| result.map(f)))),
            State::Later(future) => Ack::later(async move { future.await.map(f) }),
        }
    }

    /// `Err` when the operation already failed; the `Ack` otherwise.
    ///
    /// # Errors
    /// The failure known already.
    pub fn early(self) -> Result<Self, BrokerError> {
        match self.0 {
            State::Ready(Some(Err(error))) => Err(error),
            state => Ok(Self(state)),
        }
    }

    /// The outcome, when it is known without waiting.
    pub fn now(&mut self) -> Option<Result<T, BrokerError>> {
        match &mut self.0 {
            State::Ready(result) => result.take(),
            State::Later(_) => None,
        }
    }
}

impl<T> IntoFuture for Ack<T> {
    type Output = Result<T, BrokerError>;
    type IntoFuture = Outcome<T>;

    /// Awaiting an `Ack` waits for the operation's outcome.
    fn into_future(self) -> Outcome<T> {
        Outcome(self.0)
    }
}

/// The wait for an [`Ack`]'s outcome.
#[must_use = "futures do nothing unless polled"]
pub struct Outcome<T>(State<T>);

// `Outcome` never pins its `T`: a ready value is moved out, and the future is boxed.
impl<T> Unpin for Outcome<T> {}

impl<T> Future for Outcome<T> {
    type Output = Result<T, BrokerError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.get_mut().0 {
            State::Ready(result) => Poll::Ready(result.take().unwrap_or_else(|| {
                Err(BrokerError::Internal(
                    "an acknowledgement was awaited after it resolved".into(),
                ))
            })),
            State::Later(future) => future.as_mut().poll(cx),
        }
    }
}

impl<T> std::fmt::Debug for Ack<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.0 {
            State::Ready(_) => "Ack(ready)",
            State::Later(_) => "Ack(later)",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_ready_ack_resolves_at_once_and_only_once() {
        let mut ack = Ack::ready(Ok(7));
        assert_eq!(ack.now().unwrap().unwrap(), 7);
        assert!(matches!(ack.await, Err(BrokerError::Internal(_))));
        assert_eq!(Ack::ready(Ok(8)).await.unwrap(), 8);
    }

    #[tokio::test]
    async fn a_later_ack_resolves_with_its_future() {
        let (tx, rx) = tokio::sync::oneshot::channel::<u64>();
        let mut ack = Ack::later(async move {
            rx.await
                .map_err(|_| BrokerError::Unavailable("dropped".into()))
        });
        assert!(ack.now().is_none());
        tx.send(3).unwrap();
        assert_eq!(ack.await.unwrap(), 3);
    }
}
