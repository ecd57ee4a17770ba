//! The executor of downstream HTTP/2 connections: hyper hands it a task per stream
//! (`H2Stream`: the service's future, then the response head and body given to `h2`).
//!
//! A cache hit's stream is done in its first poll: the service answers at once
//! (`proxy::Handled::Ready`) and `h2` takes the head and a small body without waiting. So
//! [`FirstPollInline`] polls a task once where hyper hands it over, inside the connection's
//! poll, and spawns it only if it is not done: no task allocated, scheduled, polled and
//! freed by tokio per hit (h2c hit, callgrind: 42.6k → 40.4k instructions; the task's
//! allocation becomes the `Box`'s).
//!
//! The first poll uses a no-op waker: a task still pending is spawned, and tokio polls a
//! spawned task at once, when it registers its real waker; nothing it waits on is missed.

use std::future::Future;
use std::task::{Context, Waker};

/// Polls each task once in place; spawns it on the current tokio runtime if pending.
#[derive(Clone, Copy, Debug, Default)]
pub struct FirstPollInline;

impl<F> hyper::rt::Executor<F> for FirstPollInline
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, fut: F) {
        let mut fut = Box::pin(fut);
        let mut cx = Context::from_waker(Waker::noop());
        if fut.as_mut().poll(&mut cx).is_pending() {
            tokio::spawn(fut);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    use hyper::rt::Executor;

    use super::*;

    #[tokio::test]
    async fn a_ready_task_runs_in_place_and_a_pending_one_is_spawned() {
        let ran = Arc::new(AtomicUsize::new(0));
        let r = ran.clone();
        FirstPollInline.execute(async move {
            r.fetch_add(1, Ordering::SeqCst);
        });
        assert_eq!(
            ran.load(Ordering::SeqCst),
            1,
            "done before `execute` returned"
        );

        let (go, wait) = tokio::sync::oneshot::channel::<()>();
        let (done, finished) = tokio::sync::oneshot::channel::<()>();
        FirstPollInline.execute(async move {
            wait.await.unwrap();
            done.send(()).unwrap();
        });
        // Woken through the waker of its spawned task, not the first poll's no-op one.
        go.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(5), finished)
            .await
            .expect("the spawned task finished")
            .unwrap();
    }
}
