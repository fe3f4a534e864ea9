//! Flows as data: the shape every protocol run shares, on both sides.
//!
//! A flow (DKG, sign, refresh, recover) is a short conversation: the device opens it with a
//! first message, the enclave answers each device message, and the enclave's last answer
//! is a sealed *done* message that carries the flow's result (the new account id, the
//! signature's partial, the new share's id) and the account's *generation* — so the host
//! that relays the conversation can neither forge a result nor hide a rollback.
//!
//! ```text
//!   device: DeviceFlow                         enclave: EnclaveFlow
//!   X::start(..) ── message 0 ───────────────▶ X::start(..) → Step::Continue(reply 0)
//!   receive(reply 0) → Next::Send(message 1) ─▶ step(message 1) → Step::Continue(reply 1)
//!   …                                          …
//!                                              step(message n) → Step::Done(output)
//!                                              (the caller acts on output: persists it)
//!   receive(done) → Next::Done(output) ◀────── done_message(receipt)
//! ```
//!
//! Each side is driven by one generic loop: [`DeviceSession`] (I/O-free; the SDK's HTTP
//! driver and the web SDK's `fetch` driver wrap it) and the enclave's generic step handler.
//! Starting a flow is flow-specific (each takes different inputs), so `start` is an
//! inherent constructor of every machine; everything after it goes through these traits.

use serde::{Deserialize, Serialize};

use crate::auth::FirstMessage;
use crate::channel::{ChannelBinding, ClientChannel};
use crate::error::ProtocolError;
use crate::ids::SessionId;

/// The protocol flows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[repr(u8)]
pub enum Flow {
    /// Distributed key generation (createAccount).
    Dkg = 1,
    /// Signing a 32-byte digest.
    Sign = 2,
    /// Replacing both shares with fresh ones of the same key.
    Refresh = 3,
    /// Proving a restored device share matches the account.
    Recover = 4,
}

impl Flow {
    /// Every flow, in wire-tag order.
    pub const ALL: [Flow; 4] = [Flow::Dkg, Flow::Sign, Flow::Refresh, Flow::Recover];

    /// The flow of a wire tag.
    pub fn from_u8(b: u8) -> Option<Self> {
        match b {
            1 => Some(Flow::Dkg),
            2 => Some(Flow::Sign),
            3 => Some(Flow::Refresh),
            4 => Some(Flow::Recover),
            _ => None,
        }
    }

    /// The flow's name, for logs and errors.
    pub fn name(self) -> &'static str {
        match self {
            Flow::Dkg => "dkg",
            Flow::Sign => "sign",
            Flow::Refresh => "refresh",
            Flow::Recover => "recover",
        }
    }

    /// The path segment of the flow's routes (`/v1/{segment}/start`, `/v1/{segment}/step`).
    pub fn route_segment(self) -> &'static str {
        match self {
            Flow::Dkg => "createAccount",
            Flow::Sign => "sign",
            Flow::Refresh => "refresh",
            Flow::Recover => "recover",
        }
    }
}

impl std::fmt::Display for Flow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What a device-side machine asks its driver to do next.
#[derive(Debug)]
pub enum Next<T> {
    /// Seal this message as the next step and send it; feed the enclave's answer back in.
    Send(Vec<u8>),
    /// The flow is complete: the enclave's done message was checked.
    Done(T),
}

/// What an enclave-side machine answers a device message with.
#[derive(Debug)]
pub enum Step<T> {
    /// Send this reply; the session waits for the device's next message.
    Continue(Vec<u8>),
    /// The flow's cryptography is complete. The caller acts on the output (persists a
    /// share, promotes one), then answers with [`EnclaveFlow::done_message`].
    Done(T),
}

/// What the enclave tells the device when it answers DONE, beside the flow's own result:
/// facts the device records and later checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    /// The account's generation after the flow: the sealed record's version, which only
    /// grows. The device remembers the largest it saw and refuses an enclave that answers
    /// with a smaller one (a rolled-back store).
    pub generation: u64,
}

/// The device's side of a flow, after its `start`.
pub trait DeviceFlow: Send + 'static {
    /// Which flow this machine runs.
    const FLOW: Flow;
    /// What the flow yields on the device.
    type Output: Send + 'static;
    /// Feeds the enclave's (opened) answer to the current step.
    fn receive(&mut self, answer: &[u8]) -> Result<Next<Self::Output>, ProtocolError>;
}

/// The enclave's side of a flow, after its `start` (which returns the first [`Step`]).
pub trait EnclaveFlow: Send + 'static {
    /// Which flow this machine runs.
    const FLOW: Flow;
    /// What the caller must act on before answering DONE.
    type Output: Send + 'static;
    /// The session id.
    fn session_id(&self) -> SessionId;
    /// Feeds the device's (opened) message of the next step.
    fn step(&mut self, message: &[u8]) -> Result<Step<Self::Output>, ProtocolError>;
    /// The final answer, once the caller acted on the output: the flow's result and the
    /// receipt, bound to this session. Called once, after [`Step::Done`].
    fn done_message(&mut self, receipt: Receipt) -> Result<Vec<u8>, ProtocolError>;
}

/// The device's end of one flow without I/O: the machine, its sealed channel and the
/// step counter. A driver (the SDK's HTTP client, the web SDK's `fetch`) posts what it
/// returns and feeds back what the enclave answers.
pub struct DeviceSession<F: DeviceFlow> {
    machine: F,
    channel: ClientChannel,
    step: u8,
}

impl<F: DeviceFlow> DeviceSession<F> {
    /// Opens a channel to the enclave key `enclave_key` (from a verified attestation
    /// document) and seals the first message. `first` builds the first message's plaintext
    /// from the channel binding, which the device's authorization covers (so a relay that
    /// re-seals the message under another channel invalidates it). Returns the session and
    /// the `clientMessage` of the flow's `…/start`.
    pub fn open(
        enclave_key: &[u8; 32],
        machine: F,
        first: impl FnOnce(&ChannelBinding) -> FirstMessage,
    ) -> Result<(Self, Vec<u8>), ProtocolError> {
        let (mut channel, binding) = ClientChannel::new(enclave_key, F::FLOW)?;
        let plaintext = first(&binding).encode()?;
        let wire = channel.seal_first(&plaintext)?;
        Ok((
            DeviceSession {
                machine,
                channel,
                step: 0,
            },
            wire,
        ))
    }

    /// Feeds the enclave's sealed answer to the current step: the next sealed
    /// `clientMessage`, or the flow's output once the enclave's done message checked out.
    /// `done` is whether the wire said the flow is complete; it must agree with the
    /// machine (a host that flips the status gains nothing but an error).
    pub fn on_answer(&mut self, sealed: &[u8], done: bool) -> Result<Next<F::Output>, ProtocolError> {
        let answer = self.channel.open(self.step, sealed)?;
        match self.machine.receive(&answer)? {
            Next::Send(message) if !done => {
                self.step = self
                    .step
                    .checked_add(1)
                    .ok_or(ProtocolError::Internal("flow has too many steps"))?;
                Ok(Next::Send(self.channel.seal(self.step, &message)?))
            }
            Next::Done(output) if done => Ok(Next::Done(output)),
            _ => Err(ProtocolError::Malformed(
                "the answer's status disagrees with the protocol",
            )),
        }
    }

    /// The machine, to start over on another channel (the enclave restarted before it
    /// read the first message). Only meaningful before any answer was fed in.
    pub fn into_machine(self) -> F {
        self.machine
    }
}

/// Runs a flow with both parties in this process (benchmarks and tests): `first` is the
/// device machine's first message, `start` the enclave machine's constructor; the enclave's
/// done message carries `generation`. Returns both sides' outputs.
pub fn run_local<D: DeviceFlow, E: EnclaveFlow>(
    mut device: D,
    first: Vec<u8>,
    start: impl FnOnce(&[u8]) -> Result<(E, Step<E::Output>), ProtocolError>,
    generation: u64,
) -> Result<(D::Output, E::Output), ProtocolError> {
    let (mut enclave, mut step) = start(&first)?;
    loop {
        match step {
            Step::Continue(reply) => match device.receive(&reply)? {
                Next::Send(message) => step = enclave.step(&message)?,
                Next::Done(_) => return Err(ProtocolError::Malformed("device finished before the enclave")),
            },
            Step::Done(output) => {
                let done = enclave.done_message(Receipt { generation })?;
                return match device.receive(&done)? {
                    Next::Done(device_output) => Ok((device_output, output)),
                    Next::Send(_) => Err(ProtocolError::Malformed("device wants to go on after DONE")),
                };
            }
        }
    }
}
