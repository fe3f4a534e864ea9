//! The host end of `vhost-device-vsock`, for booting the image under QEMU (tests only).
//!
//! `vhost-device-vsock` gives the guest a real virtio-vsock device and maps it to Unix
//! sockets on the host (Firecracker's "hybrid vsock" convention):
//!
//! * host → guest: connect to the device's socket, send `CONNECT <port>\n`, read `OK
//!   <n>\n`, then the stream is the guest's accepted vsock connection on `<port>`;
//! * guest → host: a guest `connect(CID 2, <port>)` arrives on the Unix socket
//!   `<socket>_<port>`, which someone on the host must be listening on.
//!
//! The parent's programs speak vsock or TCP, not this handshake, so this bridge sits
//! between: a TCP listener per guest port the proxy dials (API 5000, control 5001), a Unix
//! listener per host port the enclave dials (logs, KMS), each relayed to a TCP address, and
//! the boot heartbeat answered as `nitro-cli run-enclave` answers it (0xB7 echoed).

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// One relay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Forward {
    /// Listen on a host TCP address; each connection goes to the guest's vsock `port`.
    ToGuest {
        /// Where to listen (port 0 picks one; the chosen address is printed).
        listen: SocketAddr,
        /// The guest's vsock port.
        port: u32,
    },
    /// Guest connections to the host's vsock `port` go to a host TCP address.
    ToHost {
        /// The vsock port the guest dials.
        port: u32,
        /// Where to relay them.
        target: SocketAddr,
    },
    /// Answer the Nitro boot heartbeat on this vsock port (9000).
    Heartbeat {
        /// The port.
        port: u32,
    },
}

impl std::str::FromStr for Forward {
    type Err = String;

    /// `to-guest:ADDR=PORT`, `to-host:PORT=ADDR` or `heartbeat:PORT`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("{s:?} is not to-guest:ADDR=PORT, to-host:PORT=ADDR or heartbeat:PORT");
        if let Some(rest) = s.strip_prefix("to-guest:") {
            let (a, p) = rest.split_once('=').ok_or_else(bad)?;
            return Ok(Forward::ToGuest {
                listen: a.parse().map_err(|_| bad())?,
                port: p.parse().map_err(|_| bad())?,
            });
        }
        if let Some(rest) = s.strip_prefix("to-host:") {
            let (p, a) = rest.split_once('=').ok_or_else(bad)?;
            return Ok(Forward::ToHost {
                port: p.parse().map_err(|_| bad())?,
                target: a.parse().map_err(|_| bad())?,
            });
        }
        if let Some(p) = s.strip_prefix("heartbeat:") {
            return Ok(Forward::Heartbeat {
                port: p.parse().map_err(|_| bad())?,
            });
        }
        Err(bad())
    }
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "vsock-bridge: {line}");
    let _ = out.flush();
}

/// Copies both ways until either side closes, then closes the other.
fn splice<A, B>(a: A, b: B)
where
    A: std::io::Read + std::io::Write + Send + 'static + TryClone,
    B: std::io::Read + std::io::Write + Send + 'static + TryClone,
{
    let (Ok(mut a2), Ok(mut b2)) = (a.try_clone_(), b.try_clone_()) else {
        return;
    };
    let (mut a, mut b) = (a, b);
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut a, &mut b2);
        b2.shutdown_write();
    });
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut b, &mut a2);
        a2.shutdown_write();
    });
}

/// The bits of TcpStream/UnixStream the relay needs.
trait TryClone: Sized {
    fn try_clone_(&self) -> std::io::Result<Self>;
    fn shutdown_write(&self);
}

impl TryClone for TcpStream {
    fn try_clone_(&self) -> std::io::Result<Self> {
        self.try_clone()
    }
    fn shutdown_write(&self) {
        let _ = self.shutdown(std::net::Shutdown::Write);
    }
}

impl TryClone for UnixStream {
    fn try_clone_(&self) -> std::io::Result<Self> {
        self.try_clone()
    }
    fn shutdown_write(&self) {
        let _ = self.shutdown(std::net::Shutdown::Write);
    }
}

/// Opens a stream to the guest's vsock `port` through the device's socket.
pub fn connect_guest(uds: &Path, port: u32) -> std::io::Result<UnixStream> {
    let mut s = UnixStream::connect(uds)?;
    s.write_all(format!("CONNECT {port}\n").as_bytes())?;
    // Read the answer line byte by byte: anything after it belongs to the stream.
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while byte[0] != b'\n' && line.len() < 64 {
        s.read_exact(&mut byte)?;
        line.push(byte[0]);
    }
    if !line.starts_with(b"OK ") {
        return Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            format!("guest port {port}: {}", String::from_utf8_lossy(&line).trim()),
        ));
    }
    Ok(s)
}

fn host_socket(uds: &Path, port: u32) -> PathBuf {
    let mut p = uds.as_os_str().to_owned();
    p.push(format!("_{port}"));
    PathBuf::from(p)
}

/// Starts every relay and serves them until the process ends.
pub fn run(uds: &Path, forwards: &[Forward]) -> std::io::Result<()> {
    let started = Instant::now();
    let mut threads = Vec::new();
    for f in forwards.iter().cloned() {
        let uds = uds.to_path_buf();
        match f {
            Forward::ToGuest { listen, port } => {
                let listener = TcpListener::bind(listen)?;
                say(&format!("tcp {} -> guest vsock port {port}", listener.local_addr()?));
                threads.push(std::thread::spawn(move || {
                    for conn in listener.incoming().flatten() {
                        match connect_guest(&uds, port) {
                            Ok(guest) => splice(conn, guest),
                            Err(e) => say(&format!("guest port {port} refused: {e}")),
                        }
                    }
                }));
            }
            Forward::ToHost { port, target } => {
                let path = host_socket(&uds, port);
                let _ = std::fs::remove_file(&path);
                let listener = UnixListener::bind(&path)?;
                say(&format!("guest vsock port {port} ({}) -> tcp {target}", path.display()));
                threads.push(std::thread::spawn(move || {
                    for conn in listener.incoming().flatten() {
                        match TcpStream::connect(target) {
                            Ok(host) => splice(conn, host),
                            Err(e) => say(&format!("host {target} refused: {e}")),
                        }
                    }
                }));
            }
            Forward::Heartbeat { port } => {
                let path = host_socket(&uds, port);
                let _ = std::fs::remove_file(&path);
                let listener = UnixListener::bind(&path)?;
                say(&format!("heartbeat on guest vsock port {port} ({})", path.display()));
                threads.push(std::thread::spawn(move || {
                    for mut conn in listener.incoming().flatten() {
                        let mut beat = [0u8; 1];
                        match conn.read_exact(&mut beat) {
                            Ok(()) if beat[0] == 0xB7 => {
                                let _ = conn.write_all(&beat);
                                say(&format!(
                                    "heartbeat 0xb7 received {:.1} s after the bridge started",
                                    started.elapsed().as_secs_f64()
                                ));
                            }
                            Ok(()) => say(&format!("heartbeat: unexpected byte {:#04x}", beat[0])),
                            Err(e) => say(&format!("heartbeat: {e}")),
                        }
                    }
                }));
            }
        }
    }
    say("ready");
    for t in threads {
        let _ = t.join();
    }
    Ok(())
}

/// Reads the bridge's announcement lines (tests): `tcp ADDR -> guest vsock port N`.
pub fn parse_to_guest_line(line: &str) -> Option<(SocketAddr, u32)> {
    let rest = line.strip_prefix("vsock-bridge: tcp ")?;
    let (addr, port) = rest.split_once(" -> guest vsock port ")?;
    Some((addr.parse().ok()?, port.trim().parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead as _, BufReader};

    #[test]
    fn parses_forwards() {
        assert_eq!(
            "to-guest:127.0.0.1:0=5000".parse::<Forward>().unwrap(),
            Forward::ToGuest {
                listen: "127.0.0.1:0".parse().unwrap(),
                port: 5000
            }
        );
        assert_eq!(
            "to-host:5002=127.0.0.1:9".parse::<Forward>().unwrap(),
            Forward::ToHost {
                port: 5002,
                target: "127.0.0.1:9".parse().unwrap()
            }
        );
        assert_eq!(
            "heartbeat:9000".parse::<Forward>().unwrap(),
            Forward::Heartbeat { port: 9000 }
        );
        assert!("to-guest:nonsense".parse::<Forward>().is_err());
    }

    /// A stand-in for vhost-device-vsock's socket: the handshake, then an echo.
    #[test]
    fn speaks_the_connect_handshake() {
        let dir = tempfile::tempdir().unwrap();
        let uds = dir.path().join("vsock.sock");
        let listener = UnixListener::bind(&uds).unwrap();
        std::thread::spawn(move || {
            let (s, _) = listener.accept().unwrap();
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            assert_eq!(line, "CONNECT 5000\n");
            let mut w = s;
            w.write_all(b"OK 1234\nhello").unwrap();
        });
        let mut s = connect_guest(&uds, 5000).unwrap();
        let mut got = String::new();
        s.read_to_string(&mut got).unwrap();
        assert_eq!(got, "hello");
        assert_eq!(host_socket(&uds, 9000), dir.path().join("vsock.sock_9000"));
    }
}
