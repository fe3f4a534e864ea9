//! Sockets by address: the one listener, the one dialer and the one accept loop of every
//! Tandem binary.
//!
//! ```text
//!  Addr (tandem-core: tcp:// | unix:// | vsock://)
//!    ├─ Listener::bind ─▶ accept ─▶ Stream      enclave API and control listeners (axum),
//!    │                      └─ serve_each(…)    parent blob service, parent log receiver
//!    └─ connect / connect_blocking ─▶ Stream    proxy → enclave, control pushes, log shipping,
//!                                               KMS relay, the enclave's blob store client
//! ```
//!
//! Nothing here knows what travels over the streams. One [`Stream`] type covers the three
//! transports, so code above it has one path whatever the address says: the vsock path
//! is the TCP path with another socket underneath, which is how it is tested (vsock cannot
//! be opened on these machines).

mod dial;
mod listener;
mod serve;
mod stream;

pub use dial::{connect, connect_blocking};
pub use listener::Listener;
pub use serve::{ServeLimits, serve_each};
pub use stream::{BlockingStream, Stream};
pub use tandem_core::Addr;
