//! The dialer: one stream to an [`Addr`].

use std::io;
use std::net::ToSocketAddrs as _;
use std::time::Duration;

use tandem_core::Addr;
use tokio::net::{TcpStream, UnixStream};
use tokio_vsock::{VsockAddr, VsockStream};

use super::stream::{BlockingStream, Stream};

fn not_dialable(addr: &Addr) -> io::Result<()> {
    addr.check_dial()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))
}

/// Opens a stream to `addr`, giving up after `timeout`. TCP streams have `TCP_NODELAY`
/// set: every conversation here is small requests and answers, never bulk data.
pub async fn connect(addr: &Addr, timeout: Duration) -> io::Result<Stream> {
    not_dialable(addr)?;
    let attempt = async {
        match addr {
            Addr::Tcp { host, port } => {
                let stream = TcpStream::connect((host.as_str(), *port)).await?;
                stream.set_nodelay(true)?;
                Ok(Stream::Tcp(stream))
            }
            Addr::Unix(path) => Ok(Stream::Unix(UnixStream::connect(path).await?)),
            Addr::Vsock { cid, port } => Ok(Stream::Vsock(VsockStream::connect(VsockAddr::new(*cid, *port)).await?)),
        }
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(result) => result,
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("connecting to {addr} timed out"),
        )),
    }
}

/// Opens a blocking stream to `addr` whose reads and writes time out after `timeout`
/// (TCP also bounds the connect; a vsock connect to an absent peer fails at once).
pub fn connect_blocking(addr: &Addr, timeout: Duration) -> io::Result<BlockingStream> {
    not_dialable(addr)?;
    match addr {
        Addr::Tcp { host, port } => {
            let mut last = io::Error::new(io::ErrorKind::NotFound, format!("{addr}: no address"));
            for candidate in (host.as_str(), *port).to_socket_addrs()? {
                match std::net::TcpStream::connect_timeout(&candidate, timeout) {
                    Ok(s) => {
                        s.set_nodelay(true)?;
                        s.set_read_timeout(Some(timeout))?;
                        s.set_write_timeout(Some(timeout))?;
                        return Ok(BlockingStream::Tcp(s));
                    }
                    Err(e) => last = e,
                }
            }
            Err(last)
        }
        Addr::Unix(path) => {
            let s = std::os::unix::net::UnixStream::connect(path)?;
            s.set_read_timeout(Some(timeout))?;
            s.set_write_timeout(Some(timeout))?;
            Ok(BlockingStream::Unix(s))
        }
        Addr::Vsock { cid, port } => {
            let s = vsock::VsockStream::connect_with_cid_port(*cid, *port)?;
            s.set_read_timeout(Some(timeout))?;
            s.set_write_timeout(Some(timeout))?;
            Ok(BlockingStream::Vsock(s))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_secs(5);

    #[tokio::test]
    async fn listener_only_addresses_are_not_dialled() {
        for a in ["tcp://127.0.0.1:0", "vsock://any:5000"] {
            let addr: Addr = a.parse().unwrap();
            let err = connect(&addr, T).await.unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{a}");
            assert_eq!(
                connect_blocking(&addr, T).unwrap_err().kind(),
                io::ErrorKind::InvalidInput
            );
        }
    }

    #[tokio::test]
    async fn a_closed_port_is_a_connect_error() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        drop(l);
        let addr = Addr::tcp("127.0.0.1", port);
        assert!(connect(&addr, T).await.is_err());
        assert!(connect_blocking(&addr, T).is_err());
        let missing = Addr::Unix("/nonexistent/tandem.sock".into());
        assert!(connect(&missing, T).await.is_err());
    }
}
