//! The reader and the writer of one connection, polled together, with the reader polled only
//! when something woke it.
//!
//! The writer is woken for every batch of frames queued to the connection: under fan-out, many
//! times a second. The reader is woken only by what the client sends, its close switch, its
//! expiry and its replies. Polled together as `future::select` polls them, every writer
//! wake-up also polls the reader, through the WebSocket's lock, tungstenite's waker proxies and
//! the socket's readiness: about a tenth of a gateway's CPU under fan-out (perf, see
//! docs/benchmarks.md). Here the reader is polled with a waker of its own that records that it
//! was woken, and skipped when it was not; the writer is polled at every wake-up, as before.
//!
//! The reader's waker is one small allocation per connection, made once.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};

use futures::future::Either;
use futures::task::AtomicWaker;

/// Whether the reader was woken, and the task to wake for it.
struct ReaderWake {
    woken: AtomicBool,
    task: AtomicWaker,
}

impl Wake for ReaderWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        // Recorded before the task is woken, so the poll it causes sees it.
        self.woken.store(true, Ordering::Release);
        self.task.wake();
    }
}

/// Polls `reader` and `writer` until one of them completes, like `future::select`, polling
/// the reader only on the first poll and when its own waker was woken since its last poll.
/// Gives the completed side's output and the other future.
pub(crate) fn select<A, B>(reader: A, writer: B) -> Select<A, B>
where
    A: Future + Unpin,
    B: Future + Unpin,
{
    Select {
        inner: Some((reader, writer)),
        reader: Arc::new(ReaderWake {
            // The first poll polls both.
            woken: AtomicBool::new(true),
            task: AtomicWaker::new(),
        }),
    }
}

/// The future [`select`] returns.
pub(crate) struct Select<A, B> {
    inner: Option<(A, B)>,
    reader: Arc<ReaderWake>,
}

impl<A, B> Future for Select<A, B>
where
    A: Future + Unpin,
    B: Future + Unpin,
{
    type Output = Either<(A::Output, B), (B::Output, A)>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let Some((reader, writer)) = this.inner.as_mut() else {
            // Polled again after completing: never ready again.
            return Poll::Pending;
        };
        // Registered before the flag is read: a wake-up after the read wakes this task again.
        this.reader.task.register(cx.waker());
        if this.reader.woken.swap(false, Ordering::AcqRel) {
            let waker = Waker::from(this.reader.clone());
            if let Poll::Ready(output) = Pin::new(reader).poll(&mut Context::from_waker(&waker)) {
                if let Some((_, writer)) = this.inner.take() {
                    return Poll::Ready(Either::Left((output, writer)));
                }
                return Poll::Pending;
            }
        }
        if let Poll::Ready(output) = Pin::new(writer).poll(cx)
            && let Some((reader, _)) = this.inner.take()
        {
            return Poll::Ready(Either::Right((output, reader)));
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use parking_lot::Mutex;

    use super::*;

    /// A future that counts its polls, keeps its last waker, and completes once finished.
    #[derive(Clone, Default)]
    struct Probe(Arc<ProbeState>);

    #[derive(Default)]
    struct ProbeState {
        polls: AtomicUsize,
        waker: Mutex<Option<Waker>>,
        done: AtomicBool,
    }

    impl Probe {
        fn polls(&self) -> usize {
            self.0.polls.load(Ordering::Relaxed)
        }

        /// Wakes the future without completing it.
        fn wake(&self) {
            if let Some(waker) = self.0.waker.lock().take() {
                waker.wake();
            }
        }

        fn finish(&self) {
            self.0.done.store(true, Ordering::Relaxed);
            self.wake();
        }
    }

    impl Future for Probe {
        type Output = usize;

        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<usize> {
            let polls = self.0.polls.fetch_add(1, Ordering::Relaxed) + 1;
            *self.0.waker.lock() = Some(cx.waker().clone());
            if self.0.done.load(Ordering::Relaxed) {
                Poll::Ready(polls)
            } else {
                Poll::Pending
            }
        }
    }

    /// The task's waker: counts its wake-ups.
    #[derive(Default)]
    struct Task(AtomicUsize);

    impl Wake for Task {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn poll<F: Future + Unpin>(future: &mut F, task: &Arc<Task>) -> Poll<F::Output> {
        let waker = Waker::from(task.clone());
        Pin::new(future).poll(&mut Context::from_waker(&waker))
    }

    /// Writer wake-ups poll the writer alone; the reader's own wake-up wakes the task and gets
    /// the reader polled; the reader's completion ends the select and hands the writer back.
    #[test]
    fn the_reader_is_polled_only_when_woken() {
        let task = Arc::new(Task::default());
        let (reader, writer) = (Probe::default(), Probe::default());
        let mut both = select(reader.clone(), writer.clone());
        assert!(poll(&mut both, &task).is_pending());
        assert_eq!((reader.polls(), writer.polls()), (1, 1), "both at first");

        for _ in 0..3 {
            writer.wake();
            assert!(poll(&mut both, &task).is_pending());
        }
        assert_eq!((reader.polls(), writer.polls()), (1, 4), "the writer alone");

        let woken = task.0.load(Ordering::Relaxed);
        reader.wake();
        assert_eq!(
            task.0.load(Ordering::Relaxed),
            woken + 1,
            "the task is woken"
        );
        assert!(poll(&mut both, &task).is_pending());
        assert_eq!((reader.polls(), writer.polls()), (2, 5));

        reader.finish();
        match poll(&mut both, &task) {
            Poll::Ready(Either::Left((3, mut writer_left))) => {
                writer.finish();
                assert_eq!(poll(&mut writer_left, &task), Poll::Ready(6));
            }
            _ => panic!("the reader's completion ends the select"),
        }
    }

    /// The writer's completion ends the select and hands the reader back, still polled only
    /// when woken by then.
    #[test]
    fn the_writer_completing_hands_the_reader_back() {
        let task = Arc::new(Task::default());
        let (reader, writer) = (Probe::default(), Probe::default());
        let mut both = select(reader.clone(), writer.clone());
        assert!(poll(&mut both, &task).is_pending());
        writer.finish();
        match poll(&mut both, &task) {
            Poll::Ready(Either::Right((2, mut reader_left))) => {
                assert_eq!(reader.polls(), 1, "not polled for the writer's wake-up");
                reader.finish();
                assert_eq!(poll(&mut reader_left, &task), Poll::Ready(2));
            }
            _ => panic!("the writer's completion ends the select"),
        }
    }
}
