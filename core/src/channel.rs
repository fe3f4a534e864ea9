//! The end-to-end channel between the device and the enclave (DESIGN.md §5).
//!
//! TLS ends at the parent proxy, outside the enclave, so every protocol payload is sealed
//! here, end to end, with HPKE (RFC 9180; X25519-HKDF-SHA256, HKDF-SHA256,
//! ChaCha20-Poly1305, base mode) to the enclave's channel key — an X25519 key the enclave
//! makes at boot, keeps only in memory, and publishes in its attestation document.
//!
//! ```text
//!  first clientMessage = key id (8) ‖ enc (32) ‖ HPKE ciphertext      (opens a context)
//!  later clientMessage =                          HPKE ciphertext      (same context, next seq)
//!  first serverMessage = salt (32) ‖ ChaCha20-Poly1305 ciphertext
//!  later serverMessage =             ChaCha20-Poly1305 ciphertext
//!      response key = HPKE export("tandem/v2/response" ‖ salt), nonce = step
//!  associated data     = "tandem/v2/channel" ‖ flow ‖ direction ‖ step ‖ enc
//! ```
//!
//! One HPKE context per session: a payload replayed into another session does not open
//! (another key), nor into another step or direction of the same session (the step and
//! direction are associated data; HPKE's sequence number also advances per message). The
//! enclave picks a fresh random salt for every session it opens, so its answers are under
//! a key used by that session only: a host that replays a device's first message gets a
//! second session under another key, never a second (key, nonce) use under the first
//! (review finding M2). The key id lets the enclave tell "sealed to a key I no longer have"
//! (it restarted: fetch a new attestation) from tampering.
//!
//! This channel is what binds a payload to its session, flow, step and direction against
//! the host; the [`Envelope`](crate::message::Envelope) header inside repeats those as a
//! typed self-check of the state machines (defence in depth, and clearer errors).

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305 as ResponseAead, Nonce};
use hpke::aead::{AeadCtxR, AeadCtxS, ChaCha20Poly1305};
use hpke::kdf::HkdfSha256;
use hpke::kem::X25519HkdfSha256;
use hpke::{Deserializable, Kem as _, OpModeR, OpModeS, Serializable};
use rand_core::TryRngCore;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::error::ProtocolError;
use crate::flow::Flow;

type Kem = X25519HkdfSha256;

/// Length of a channel public key (X25519).
pub const CHANNEL_KEY_LEN: usize = 32;
const KEY_ID_LEN: usize = 8;
const ENC_LEN: usize = 32;
const SALT_LEN: usize = 32;

/// A short identifier of a channel public key: the first 8 bytes of its SHA-256.
pub fn key_id(public_key: &[u8; CHANNEL_KEY_LEN]) -> [u8; KEY_ID_LEN] {
    let d = Sha256::digest([&b"tandem/v1/channel-key"[..], &public_key[..]].concat());
    let mut out = [0u8; KEY_ID_LEN];
    out.copy_from_slice(&d[..KEY_ID_LEN]);
    out
}

/// Which channel a session travels in: the enclave key it was sealed to and the sender's
/// encapsulated key. The device's authorization covers it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChannelBinding {
    /// [`key_id`] of the enclave's channel key.
    pub key_id: [u8; KEY_ID_LEN],
    /// HPKE's encapsulated key: fresh for every session.
    pub enc: [u8; ENC_LEN],
}

fn info(flow: Flow) -> Vec<u8> {
    let mut v = b"tandem/v2/channel".to_vec();
    v.push(flow as u8);
    v
}

fn aad(flow: Flow, to_device: bool, step: u8, enc: &[u8; ENC_LEN]) -> Vec<u8> {
    let mut v = Vec::with_capacity(64);
    v.extend_from_slice(b"tandem/v2/channel");
    v.push(flow as u8);
    v.push(u8::from(to_device));
    v.push(step);
    v.extend_from_slice(enc);
    v
}

fn rng() -> rand_core::UnwrapErr<rand_core::OsRng> {
    rand_core::OsRng.unwrap_err()
}

fn invalid() -> ProtocolError {
    ProtocolError::SealedPayloadInvalid
}

fn response_key(
    salt: &[u8; SALT_LEN],
    export: impl FnOnce(&[u8], &mut [u8]) -> Result<(), hpke::HpkeError>,
) -> Result<Zeroizing<[u8; 32]>, ProtocolError> {
    let mut key = Zeroizing::new([0u8; 32]);
    let context = [&b"tandem/v2/response"[..], &salt[..]].concat();
    export(&context, &mut key[..]).map_err(|_| ProtocolError::Internal("HPKE export failed"))?;
    Ok(key)
}

fn response_nonce(step: u8) -> Nonce {
    let mut n = [0u8; 12];
    n[11] = step;
    Nonce::from(n)
}

/// The enclave's channel key pair: made at boot, held only in memory, never persisted.
pub struct ChannelKeypair {
    secret: <Kem as hpke::Kem>::PrivateKey,
    public: [u8; CHANNEL_KEY_LEN],
}

impl ChannelKeypair {
    /// A fresh key pair from the OS RNG.
    pub fn generate() -> Self {
        let (secret, public) = Kem::gen_keypair(&mut rng());
        let mut bytes = [0u8; CHANNEL_KEY_LEN];
        bytes.copy_from_slice(&public.to_bytes());
        ChannelKeypair { secret, public: bytes }
    }

    /// The public key, as published in the attestation document.
    pub fn public_key(&self) -> [u8; CHANNEL_KEY_LEN] {
        self.public
    }
}

impl std::fmt::Debug for ChannelKeypair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ChannelKeypair(public {})", hex::encode(self.public))
    }
}

/// The device's end of one session's channel.
pub struct ClientChannel {
    flow: Flow,
    binding: ChannelBinding,
    ctx: AeadCtxS<ChaCha20Poly1305, HkdfSha256, Kem>,
    /// Set by the enclave's first answer (it carries the salt).
    response_key: Option<Zeroizing<[u8; 32]>>,
}

impl ClientChannel {
    /// Sets up a channel to the enclave key `enclave_key` (taken from a verified
    /// attestation document). Returns the channel and its binding, which the device signs
    /// into its authorization before sealing the first message.
    pub fn new(enclave_key: &[u8; CHANNEL_KEY_LEN], flow: Flow) -> Result<(Self, ChannelBinding), ProtocolError> {
        let pk = <Kem as hpke::Kem>::PublicKey::from_bytes(enclave_key)
            .map_err(|_| ProtocolError::InvalidField("enclave channel key"))?;
        let (encapped, ctx) =
            hpke::setup_sender::<ChaCha20Poly1305, HkdfSha256, Kem, _>(&OpModeS::Base, &pk, &info(flow), &mut rng())
                .map_err(|_| ProtocolError::Internal("HPKE setup failed"))?;
        let mut enc = [0u8; ENC_LEN];
        enc.copy_from_slice(&encapped.to_bytes());
        let binding = ChannelBinding {
            key_id: key_id(enclave_key),
            enc,
        };
        Ok((
            ClientChannel {
                flow,
                binding,
                ctx,
                response_key: None,
            },
            binding,
        ))
    }

    /// The channel's binding.
    pub fn binding(&self) -> ChannelBinding {
        self.binding
    }

    /// Seals the first message (step 0): the wire bytes of the flow's `…/start`.
    pub fn seal_first(&mut self, plaintext: &[u8]) -> Result<Vec<u8>, ProtocolError> {
        let ct = self
            .ctx
            .seal(plaintext, &aad(self.flow, false, 0, &self.binding.enc))
            .map_err(|_| ProtocolError::Internal("HPKE seal failed"))?;
        let mut wire = Vec::with_capacity(KEY_ID_LEN + ENC_LEN + ct.len());
        wire.extend_from_slice(&self.binding.key_id);
        wire.extend_from_slice(&self.binding.enc);
        wire.extend_from_slice(&ct);
        Ok(wire)
    }

    /// Seals the device's message of `step` (1, 2, …).
    pub fn seal(&mut self, step: u8, plaintext: &[u8]) -> Result<Vec<u8>, ProtocolError> {
        self.ctx
            .seal(plaintext, &aad(self.flow, false, step, &self.binding.enc))
            .map_err(|_| ProtocolError::Internal("HPKE seal failed"))
    }

    /// Opens the enclave's answer to `step`. The answer to step 0 carries the session's
    /// salt, which fixes the key of every answer after it.
    pub fn open(&mut self, step: u8, wire: &[u8]) -> Result<Zeroizing<Vec<u8>>, ProtocolError> {
        let ct = if step == 0 {
            if wire.len() < SALT_LEN {
                return Err(ProtocolError::Malformed("sealed answer shorter than its salt"));
            }
            let mut salt = [0u8; SALT_LEN];
            salt.copy_from_slice(&wire[..SALT_LEN]);
            let ctx = &self.ctx;
            self.response_key = Some(response_key(&salt, |i, o| ctx.export(i, o))?);
            &wire[SALT_LEN..]
        } else {
            wire
        };
        let key = self.response_key.as_ref().ok_or(ProtocolError::SessionClosed)?;
        ResponseAead::new((&**key).into())
            .decrypt(
                &response_nonce(step),
                Payload {
                    msg: ct,
                    aad: &aad(self.flow, true, step, &self.binding.enc),
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| invalid())
    }
}

/// The enclave's end of one session's channel.
pub struct EnclaveChannel {
    flow: Flow,
    binding: ChannelBinding,
    ctx: AeadCtxR<ChaCha20Poly1305, HkdfSha256, Kem>,
    salt: [u8; SALT_LEN],
    response_key: Zeroizing<[u8; 32]>,
}

impl EnclaveChannel {
    /// Opens the device's first message of a flow, with a fresh salt for this session's
    /// answers.
    pub fn open_first(
        keys: &ChannelKeypair,
        flow: Flow,
        wire: &[u8],
    ) -> Result<(Self, Zeroizing<Vec<u8>>), ProtocolError> {
        if wire.len() < KEY_ID_LEN + ENC_LEN {
            return Err(ProtocolError::Malformed("sealed message shorter than its header"));
        }
        let own_id = key_id(&keys.public);
        if wire[..KEY_ID_LEN] != own_id {
            return Err(ProtocolError::ChannelKeyChanged);
        }
        let mut enc = [0u8; ENC_LEN];
        enc.copy_from_slice(&wire[KEY_ID_LEN..KEY_ID_LEN + ENC_LEN]);
        let encapped = <Kem as hpke::Kem>::EncappedKey::from_bytes(&enc).map_err(|_| invalid())?;
        let mut ctx = hpke::setup_receiver::<ChaCha20Poly1305, HkdfSha256, Kem>(
            &OpModeR::Base,
            &keys.secret,
            &encapped,
            &info(flow),
        )
        .map_err(|_| invalid())?;
        let plaintext = ctx
            .open(&wire[KEY_ID_LEN + ENC_LEN..], &aad(flow, false, 0, &enc))
            .map(Zeroizing::new)
            .map_err(|_| invalid())?;
        let mut salt = [0u8; SALT_LEN];
        getrandom::fill(&mut salt).map_err(|_| ProtocolError::Internal("system RNG failed"))?;
        let response_key = response_key(&salt, |i, o| ctx.export(i, o))?;
        Ok((
            EnclaveChannel {
                flow,
                binding: ChannelBinding { key_id: own_id, enc },
                ctx,
                salt,
                response_key,
            },
            plaintext,
        ))
    }

    /// The channel's binding (what the device's authorization must cover).
    pub fn binding(&self) -> ChannelBinding {
        self.binding
    }

    /// Opens the device's message of `step` (1, 2, …).
    pub fn open(&mut self, step: u8, wire: &[u8]) -> Result<Zeroizing<Vec<u8>>, ProtocolError> {
        self.ctx
            .open(wire, &aad(self.flow, false, step, &self.binding.enc))
            .map(Zeroizing::new)
            .map_err(|_| invalid())
    }

    /// Seals the enclave's answer to `step` (the answer to step 0 leads with the salt).
    pub fn seal(&self, step: u8, plaintext: &[u8]) -> Result<Vec<u8>, ProtocolError> {
        let ct = ResponseAead::new((&*self.response_key).into())
            .encrypt(
                &response_nonce(step),
                Payload {
                    msg: plaintext,
                    aad: &aad(self.flow, true, step, &self.binding.enc),
                },
            )
            .map_err(|_| ProtocolError::Internal("response seal failed"))?;
        Ok(if step == 0 { [&self.salt[..], &ct].concat() } else { ct })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn first(keys: &ChannelKeypair, msg: &[u8]) -> (ClientChannel, Vec<u8>) {
        let (mut c, _) = ClientChannel::new(&keys.public_key(), Flow::Sign).unwrap();
        let wire = c.seal_first(msg).unwrap();
        (c, wire)
    }

    #[test]
    fn round_trip_and_every_misuse_fails() {
        let keys = ChannelKeypair::generate();
        let (mut client, first_wire) = first(&keys, b"hello");
        let (mut enclave, pt) = EnclaveChannel::open_first(&keys, Flow::Sign, &first_wire).unwrap();
        assert_eq!(&pt[..], b"hello");
        assert_eq!(enclave.binding(), client.binding());

        let r0 = enclave.seal(0, b"reply 0").unwrap();
        assert_eq!(&client.open(0, &r0).unwrap()[..], b"reply 0");
        let r1 = enclave.seal(1, b"reply 1").unwrap();
        // The reply of step 1 is not the reply of step 2.
        assert_eq!(client.open(2, &r1).unwrap_err(), ProtocolError::SealedPayloadInvalid);
        assert_eq!(&client.open(1, &r1).unwrap()[..], b"reply 1");

        let m1 = client.seal(1, b"step 1").unwrap();
        // Reflecting the enclave's own message back fails.
        assert!(enclave.open(1, &r1).is_err());
        let (mut enclave2, _) = EnclaveChannel::open_first(&keys, Flow::Sign, &first_wire).unwrap();
        assert_eq!(&enclave2.open(1, &m1).unwrap()[..], b"step 1");
        // Replayed as step 2 of the same session: fails.
        let (mut enclave3, _) = EnclaveChannel::open_first(&keys, Flow::Sign, &first_wire).unwrap();
        assert!(enclave3.open(2, &m1).is_err());
        // Into another session: fails.
        let (_c2, other_first) = first(&keys, b"x");
        let (mut other, _) = EnclaveChannel::open_first(&keys, Flow::Sign, &other_first).unwrap();
        assert!(other.open(1, &m1).is_err());
        // Another flow's context: fails.
        assert!(EnclaveChannel::open_first(&keys, Flow::Dkg, &first_wire).is_err());
        // Tampering anywhere in the first message fails.
        for i in 0..first_wire.len() {
            let mut bad = first_wire.clone();
            bad[i] ^= 1;
            assert!(
                EnclaveChannel::open_first(&keys, Flow::Sign, &bad).is_err(),
                "flip at {i}"
            );
        }
        // A restarted enclave (new key) reports the key change, distinctly.
        let restarted = ChannelKeypair::generate();
        assert_eq!(
            EnclaveChannel::open_first(&restarted, Flow::Sign, &first_wire)
                .err()
                .unwrap(),
            ProtocolError::ChannelKeyChanged
        );
    }

    /// Review finding M2: a host that replays a device's first message gets a second
    /// session whose answers are sealed under another key, so no (key, nonce) pair is
    /// ever used twice and the two answers' XOR reveals nothing.
    #[test]
    fn replayed_first_message_never_reuses_a_response_key_and_nonce() {
        let keys = ChannelKeypair::generate();
        let (_client, first_wire) = first(&keys, b"start");
        let (a, _) = EnclaveChannel::open_first(&keys, Flow::Sign, &first_wire).unwrap();
        let (b, _) = EnclaveChannel::open_first(&keys, Flow::Sign, &first_wire).unwrap();
        let same = [0u8; 64];
        let (ra, rb) = (a.seal(0, &same).unwrap(), b.seal(0, &same).unwrap());
        assert_ne!(ra[..SALT_LEN], rb[..SALT_LEN], "fresh salt per session");
        assert_ne!(
            ra[SALT_LEN..],
            rb[SALT_LEN..],
            "same plaintext, same step: different ciphertexts"
        );
        assert_ne!(*a.response_key, *b.response_key);
    }
}
