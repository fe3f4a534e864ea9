//! The listener: bound to an [`Addr`], accepting [`Stream`]s.

use std::io;
use std::path::Path;

use tandem_core::Addr;
use tokio::net::{TcpListener, UnixListener};
use tokio_vsock::{VsockAddr, VsockListener};

use super::stream::Stream;

/// A bound listening socket: TCP, Unix or vsock.
#[derive(Debug)]
pub struct Listener {
    inner: Inner,
}

#[derive(Debug)]
enum Inner {
    Tcp(TcpListener),
    Unix(UnixListener),
    Vsock(VsockListener),
}

impl Listener {
    /// Binds `addr`. TCP port 0 picks a free port ([`Listener::local_addr`] tells which).
    /// A Unix socket file left by an earlier run is replaced; any other file at that path
    /// is an error, never deleted.
    pub async fn bind(addr: &Addr) -> io::Result<Self> {
        let inner = match addr {
            Addr::Tcp { host, port } => Inner::Tcp(TcpListener::bind((host.as_str(), *port)).await?),
            Addr::Unix(path) => {
                remove_stale_socket(path)?;
                Inner::Unix(UnixListener::bind(path)?)
            }
            Addr::Vsock { cid, port } => Inner::Vsock(VsockListener::bind(VsockAddr::new(*cid, *port))?),
        };
        Ok(Listener { inner })
    }

    /// The bound address, in the form a peer dials (the real port after binding port 0).
    pub fn local_addr(&self) -> io::Result<Addr> {
        match &self.inner {
            Inner::Tcp(l) => Ok(l.local_addr()?.into()),
            Inner::Unix(l) => l
                .local_addr()?
                .as_pathname()
                .map(|p| Addr::Unix(p.to_path_buf()))
                .ok_or_else(|| io::Error::other("the Unix listener has no path")),
            Inner::Vsock(l) => {
                let a = l.local_addr()?;
                Ok(Addr::vsock(a.cid(), a.port()))
            }
        }
    }

    /// Waits for the next connection; returns it with the peer's address (an unnamed Unix
    /// peer, the usual case, has an empty path).
    pub async fn accept(&self) -> io::Result<(Stream, Addr)> {
        match &self.inner {
            Inner::Tcp(l) => {
                let (s, peer) = l.accept().await?;
                s.set_nodelay(true)?;
                Ok((Stream::Tcp(s), peer.into()))
            }
            Inner::Unix(l) => {
                let (s, peer) = l.accept().await?;
                let path = peer.as_pathname().map(|p| p.to_path_buf()).unwrap_or_default();
                Ok((Stream::Unix(s), Addr::Unix(path)))
            }
            Inner::Vsock(l) => {
                let (s, peer) = l.accept().await?;
                Ok((Stream::Vsock(s), Addr::vsock(peer.cid(), peer.port())))
            }
        }
    }
}

/// Removes a socket file at `path` (an earlier run's); leaves anything else alone.
fn remove_stale_socket(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::FileTypeExt as _;
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => std::fs::remove_file(path),
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{} exists and is not a socket", path.display()),
        )),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// `axum::serve(listener, router)` on any transport. Accept errors are logged and retried
/// after a pause, as axum does for its own listeners (a full file table must not end the
/// server).
#[cfg(feature = "axum")]
impl axum::serve::Listener for Listener {
    type Io = Stream;
    type Addr = Addr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match Listener::accept(self).await {
                Ok(accepted) => return accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed; retrying");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Listener::local_addr(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::connect;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    /// The TCP and Unix twins of every transport: bind, learn the address, dial it, talk.
    #[tokio::test]
    async fn tcp_and_unix_listeners_accept_what_the_dialer_opens() {
        let dir = tempfile::tempdir().unwrap();
        for addr in [
            Addr::tcp("127.0.0.1", 0),
            Addr::tcp("::1", 0),
            Addr::Unix(dir.path().join("t.sock")),
        ] {
            let listener = match Listener::bind(&addr).await {
                Ok(l) => l,
                // A machine without IPv6 loopback: nothing to test there.
                Err(_) if matches!(&addr, Addr::Tcp { host, .. } if host == "::1") => continue,
                Err(e) => panic!("bind {addr}: {e}"),
            };
            let bound = listener.local_addr().unwrap();
            assert!(bound.check_dial().is_ok(), "{addr} bound as {bound}");
            let server = tokio::spawn(async move {
                let (mut s, _peer) = listener.accept().await.unwrap();
                let mut buf = [0u8; 4];
                s.read_exact(&mut buf).await.unwrap();
                s.write_all(&buf).await.unwrap();
            });
            let mut c = connect(&bound, Duration::from_secs(5)).await.unwrap();
            c.write_all(b"ping").await.unwrap();
            let mut echo = [0u8; 4];
            c.read_exact(&mut echo).await.unwrap();
            assert_eq!(&echo, b"ping", "{bound}");
            server.await.unwrap();
        }
    }

    #[tokio::test]
    async fn a_stale_socket_is_replaced_but_a_regular_file_is_not_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let first = Listener::bind(&Addr::Unix(path.clone())).await.unwrap();
        drop(first);
        assert!(path.exists(), "the socket file outlives its listener");
        Listener::bind(&Addr::Unix(path.clone())).await.unwrap();

        let file = dir.path().join("precious.txt");
        std::fs::write(&file, b"keep me").unwrap();
        let err = Listener::bind(&Addr::Unix(file.clone())).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(&file).unwrap(), b"keep me");
    }
}
