//! The one accept loop: a handler per connection, bounded, drained on shutdown.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::listener::Listener;
use super::stream::Stream;

/// Bounds of [`serve_each`].
#[derive(Debug, Clone, Copy)]
pub struct ServeLimits {
    /// Connections handled at once; further ones wait in the kernel's backlog.
    pub max_connections: usize,
    /// After shutdown, how long running handlers get to finish before they are aborted.
    pub drain: Duration,
}

/// Accepts connections on `listener` until `shutdown` and runs `handle` on each, on a
/// task of its own, at most `limits.max_connections` at once. Accept errors (a full file
/// table, say) are logged and retried with a growing pause rather than ending the loop.
/// On shutdown the listener closes, running handlers get `limits.drain` to finish, and
/// whatever is still running then is aborted, so this returns in bounded time.
pub async fn serve_each<H, F>(listener: Listener, limits: ServeLimits, shutdown: CancellationToken, handle: H)
where
    H: Fn(Stream) -> F,
    F: Future<Output = ()> + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let mut running = JoinSet::new();
    let mut backoff = Duration::from_millis(10);
    loop {
        while running.try_join_next().is_some() {}
        let slot = tokio::select! {
            s = slots.clone().acquire_owned() => match s { Ok(s) => s, Err(_) => break },
            _ = shutdown.cancelled() => break,
        };
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.cancelled() => break,
        };
        match accepted {
            Ok((stream, _peer)) => {
                backoff = Duration::from_millis(10);
                let work = handle(stream);
                running.spawn(async move {
                    work.await;
                    drop(slot);
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "accept failed; backing off");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
    drop(listener);
    let drained = tokio::time::timeout(limits.drain, async { while running.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::debug!(
            aborted = running.len(),
            "connections still open after the drain were closed"
        );
        running.abort_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::{Addr, connect};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    const T: Duration = Duration::from_secs(5);

    #[tokio::test]
    async fn each_connection_gets_the_handler_and_shutdown_ends_even_stuck_ones() {
        let listener = Listener::bind(&Addr::tcp("127.0.0.1", 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let served = Arc::new(AtomicUsize::new(0));
        let counter = served.clone();
        let limits = ServeLimits {
            max_connections: 4,
            drain: Duration::from_millis(200),
        };
        let server = tokio::spawn(serve_each(listener, limits, stop.clone(), move |mut s| {
            let counter = counter.clone();
            async move {
                let mut b = [0u8; 1];
                if s.read_exact(&mut b).await.is_ok() {
                    counter.fetch_add(1, Ordering::SeqCst);
                    let _ = s.write_all(&b).await;
                }
                // Then hang, as a peer that never closes would make a handler do.
                std::future::pending::<()>().await;
            }
        }));
        let mut clients = Vec::new();
        for i in 0..3u8 {
            let mut c = connect(&addr, T).await.unwrap();
            c.write_all(&[i]).await.unwrap();
            let mut b = [0u8; 1];
            c.read_exact(&mut b).await.unwrap();
            assert_eq!(b[0], i);
            clients.push(c);
        }
        assert_eq!(served.load(Ordering::SeqCst), 3);
        stop.cancel();
        tokio::time::timeout(T, server)
            .await
            .expect("shutdown is bounded by the drain")
            .unwrap();
        assert!(connect(&addr, T).await.is_err(), "the listener is closed");
    }
}
