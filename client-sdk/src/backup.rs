//! Encrypted backups of the device's account material.
//!
//! A 2-of-2 key is lost for good when the device share is lost, so the device keeps an
//! encrypted copy somewhere else (a file, Google Drive: [`crate::drive`]). The file is
//! encrypted under a passphrase only its owner knows; whoever holds the file (a cloud
//! provider, a thief) has nothing without it, and the enclave's share alone is useless.
//!
//! # Format, version 1
//!
//! All integers big-endian. The header is public and is authenticated as a whole (it is
//! the AEAD's associated data), so none of its fields can be changed without the
//! decryption failing:
//!
//! ```text
//! offset size  field
//!      0    8  magic "TANDEMBK"
//!      8    1  format version = 1
//!      9    1  KDF = 1: Argon2id, version 0x13 (RFC 9106)
//!     10    4  m_cost (KiB)
//!     14    4  t_cost (passes)
//!     18    4  p_cost (lanes)
//!     22   16  salt (random)
//!     38    1  AEAD = 1: XChaCha20-Poly1305
//!     39   24  nonce (random)
//!     63   16  account id
//!     79   33  account public key (compressed SEC1)
//!    112    4  ciphertext length (with its 16-byte tag)
//!    116    …  ciphertext
//! ```
//!
//! key = Argon2id(passphrase (UTF-8), salt, m, t, p) → 32 bytes; ciphertext =
//! XChaCha20-Poly1305(key, nonce, plaintext, associated data = header[0..116]). The account
//! id and public key are in the header so that a restore can tell, *before* spending the
//! KDF's memory and time, which account the file is for, and refuse another account's
//! backup; being in the associated data, they cannot be swapped. (They are public: the
//! address can be derived from the public key. The share and the auth key are not.)
//!
//! The plaintext ("contents", its own version byte):
//!
//! ```text
//!   1  contents version = 1
//!   8  created at (Unix seconds)
//!   4  account JSON length, then the JSON of Account::to_json
//!   1  PCR count (≤ 32), then per PCR: index (1), length (1, ≤ 64), value
//! ```
//!
//! # KDF limits
//!
//! The parameters travel in the file, so a file can ask for anything. Decryption refuses
//! parameters below a floor (a file made weak by a bug or an attacker would be cheap to
//! brute-force) and above a ceiling (a hostile file must not make the device allocate
//! gigabytes or run for minutes), and both checks happen before any memory is allocated:
//! see [`KdfLimits`]. Encryption applies the same limits, so every file this SDK writes
//! is one it can read.
//!
//! A later format gets a new version byte; [`decrypt`] dispatches on it, so version 1
//! files stay readable.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use argon2::{Algorithm, Argon2, Block, Params, Version};
use chacha20poly1305::aead::{Aead, AeadInPlace, KeyInit, Payload};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};
use tandem_core::{AccountId, PublicKey};
use zeroize::{Zeroize, Zeroizing};

use crate::{Account, Client, SdkError};

/// The first eight bytes of every backup file.
pub const MAGIC: &[u8; 8] = b"TANDEMBK";

/// The format version this SDK writes.
pub const FORMAT_VERSION: u8 = 1;

/// The largest backup file accepted (an account's material is a few kilobytes).
pub const MAX_BACKUP_LEN: usize = 1 << 20;

/// The shortest passphrase [`encrypt`] accepts, in characters. A short passphrase is the
/// weak point of the whole scheme: Argon2id only multiplies the cost of each guess.
pub const MIN_PASSPHRASE_CHARS: usize = 8;

const KDF_ARGON2ID_V13: u8 = 1;
const AEAD_XCHACHA20POLY1305: u8 = 1;
/// Contents version 2 carries a list of accepted images; version 1 (one PCR map) is
/// still read, as one image.
const CONTENTS_VERSION: u8 = 2;
const CONTENTS_VERSION_1: u8 = 1;
const MAX_IMAGES: usize = 16;
const SALT_LEN: usize = 16;
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
const KEY_LEN: usize = 32;
const MAX_PCRS: usize = 32;
const MAX_PCR_LEN: usize = 64;
/// Header length of format version 1.
const HEADER_LEN_V1: usize = 116;

/// Why a backup could not be written or read. Each check has its own variant, so a
/// failure says what was wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BackupError {
    /// The bytes are not a Tandem backup (wrong magic, too short, too large).
    #[error("not a Tandem backup file: {0}")]
    NotABackup(&'static str),
    /// A format version this SDK does not know (written by a newer SDK, or corrupted).
    #[error("unsupported backup format version {0} (this SDK reads version {FORMAT_VERSION})")]
    UnsupportedVersion(u8),
    /// A KDF or cipher identifier this SDK does not know.
    #[error("unsupported {what} identifier {id} in the backup header")]
    UnsupportedAlgorithm {
        /// `"KDF"` or `"cipher"`.
        what: &'static str,
        /// The identifier found.
        id: u8,
    },
    /// The header does not hold together (truncated, bad lengths, bad public key).
    #[error("malformed backup: {0}")]
    Malformed(&'static str),
    /// The KDF parameters are weaker than the floor: a brute-force of the passphrase
    /// would be too cheap. Refused before any work is done.
    #[error("key-derivation parameters {found} are below the accepted floor {floor}")]
    KdfBelowFloor {
        /// The file's parameters.
        found: KdfParams,
        /// The floor.
        floor: KdfParams,
    },
    /// The KDF parameters exceed the ceiling: the file demands more memory or time than
    /// a device should spend. Refused before any memory is allocated.
    #[error("key-derivation parameters {found} exceed the accepted ceiling {ceiling}")]
    KdfAboveCeiling {
        /// The file's parameters.
        found: KdfParams,
        /// The ceiling.
        ceiling: KdfParams,
    },
    /// The parameters are not valid Argon2id parameters (e.g. memory below 8 KiB per lane).
    #[error("invalid key-derivation parameters {0}")]
    InvalidKdfParams(KdfParams),
    /// The file is another account's backup.
    #[error("this backup is for account {found}, not {expected}")]
    WrongAccount {
        /// The account the caller expected.
        expected: AccountId,
        /// The account the file names.
        found: AccountId,
    },
    /// The file names the expected account id but another public key.
    #[error("this backup is for another key of account {0} (public key differs)")]
    WrongPublicKey(AccountId),
    /// The AEAD tag did not verify: the passphrase is wrong, or the file was modified.
    /// (The two cannot be told apart, by design.)
    #[error("wrong passphrase, or the backup file was modified")]
    Decryption,
    /// The file decrypted but its contents are not valid account material.
    #[error("the backup's contents are invalid: {0}")]
    Contents(String),
    /// The passphrase is refused for a new backup.
    #[error("passphrase refused: {0}")]
    WeakPassphrase(String),
    /// The device could not provide the KDF's memory, or its RNG failed.
    #[error("resource error: {0}")]
    Resource(&'static str),
}

/// A passphrase, zeroized when dropped and never printed by `Debug`.
///
/// Passphrases are used exactly as given (their UTF-8 bytes); callers that read them from
/// a terminal or a file should strip the trailing newline, as the CLI does. Clones are
/// zeroized too (async helpers move a clone onto a blocking thread for the KDF).
#[derive(Clone)]
pub struct Passphrase(Zeroizing<String>);

impl Passphrase {
    /// Wraps `text` (taking ownership, so no unzeroized copy stays with the caller).
    pub fn new(text: String) -> Self {
        Passphrase(Zeroizing::new(text))
    }

    /// The passphrase's bytes, for the KDF.
    fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }

    /// Its length in characters (not bytes), for strength checks and prompts.
    pub fn chars(&self) -> usize {
        self.0.chars().count()
    }
}

impl From<String> for Passphrase {
    fn from(text: String) -> Self {
        Passphrase::new(text)
    }
}

impl PartialEq for Passphrase {
    /// Compares two entries of a passphrase (the CLI asks twice). Not constant-time: both
    /// sides are the user's own input, not a secret checked against an attacker's guess.
    fn eq(&self, other: &Self) -> bool {
        *self.0 == *other.0
    }
}

impl std::fmt::Debug for Passphrase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Passphrase(<redacted>)")
    }
}

/// Argon2id parameters, as stored in a backup's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KdfParams {
    /// Memory, in KiB.
    pub m_cost_kib: u32,
    /// Passes over the memory.
    pub t_cost: u32,
    /// Lanes (parallelism).
    pub p_cost: u32,
}

impl KdfParams {
    /// What new backups use: 64 MiB, 3 passes, 1 lane (about half a second on a laptop
    /// core; RFC 9106's second recommended option, with more passes).
    pub const DEFAULT: KdfParams = KdfParams {
        m_cost_kib: 64 * 1024,
        t_cost: 3,
        p_cost: 1,
    };
}

impl Default for KdfParams {
    fn default() -> Self {
        Self::DEFAULT
    }
}

impl std::fmt::Display for KdfParams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "(m = {} KiB, t = {}, p = {})",
            self.m_cost_kib, self.t_cost, self.p_cost
        )
    }
}

/// The range of KDF parameters a device accepts, checked before any memory is allocated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KdfLimits {
    floor: KdfParams,
    ceiling: KdfParams,
}

impl KdfLimits {
    /// What [`encrypt`] and [`decrypt`] apply. Floor: 19 MiB, 2 passes (OWASP's minimum for
    /// Argon2id); ceiling: 256 MiB, 4 passes, 4 lanes — a hostile file must not cost a
    /// phone more than about a second and a quarter of a gigabyte before its tag is checked
    /// (review finding L3). Backups made with more need [`KdfLimits::danger_allow_expensive`].
    pub const STANDARD: KdfLimits = KdfLimits {
        floor: KdfParams {
            m_cost_kib: 19 * 1024,
            t_cost: 2,
            p_cost: 1,
        },
        ceiling: KdfParams {
            m_cost_kib: 256 * 1024,
            t_cost: 4,
            p_cost: 4,
        },
    };

    /// DANGER: raises the ceiling to 1 GiB, 10 passes, 4 lanes (several seconds and a
    /// gigabyte), for a file the caller knows it made with such parameters. A file from an
    /// untrusted source can then cost that much before its authenticity is known.
    pub fn danger_allow_expensive() -> Self {
        KdfLimits {
            floor: Self::STANDARD.floor,
            ceiling: KdfParams {
                m_cost_kib: 1024 * 1024,
                t_cost: 10,
                p_cost: 4,
            },
        }
    }

    /// DANGER: accepts Argon2id's own minimum (8 KiB, 1 pass), which a passphrase
    /// brute-force barely notices. Only for tests that must decrypt thousands of files;
    /// never for a backup that protects a real share. The ceiling is unchanged.
    pub fn danger_allow_weak() -> Self {
        KdfLimits {
            floor: KdfParams {
                m_cost_kib: Params::MIN_M_COST,
                t_cost: Params::MIN_T_COST,
                p_cost: Params::MIN_P_COST,
            },
            ceiling: Self::STANDARD.ceiling,
        }
    }

    /// The floor.
    pub fn floor(&self) -> KdfParams {
        self.floor
    }

    /// The ceiling.
    pub fn ceiling(&self) -> KdfParams {
        self.ceiling
    }

    /// Refuses `p` if it lies below the floor or above the ceiling in any dimension, or is
    /// not valid for Argon2id. Pure arithmetic: nothing is allocated.
    pub fn check(&self, p: KdfParams) -> Result<(), BackupError> {
        let (lo, hi) = (self.floor, self.ceiling);
        if p.m_cost_kib > hi.m_cost_kib || p.t_cost > hi.t_cost || p.p_cost > hi.p_cost {
            return Err(BackupError::KdfAboveCeiling { found: p, ceiling: hi });
        }
        if p.m_cost_kib < lo.m_cost_kib || p.t_cost < lo.t_cost || p.p_cost < lo.p_cost {
            return Err(BackupError::KdfBelowFloor { found: p, floor: lo });
        }
        // Argon2 needs 8 KiB (two blocks per sync point) per lane.
        if p.p_cost == 0 || u64::from(p.m_cost_kib) < 8 * u64::from(p.p_cost) {
            return Err(BackupError::InvalidKdfParams(p));
        }
        Ok(())
    }
}

impl Default for KdfLimits {
    fn default() -> Self {
        Self::STANDARD
    }
}

/// The public part of a backup: readable without the passphrase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupHeader {
    /// The format version.
    pub version: u8,
    /// The KDF parameters the file asks for.
    pub kdf: KdfParams,
    /// The account the file is a backup of.
    pub account_id: AccountId,
    /// That account's public key.
    pub public_key: PublicKey,
    salt: [u8; SALT_LEN],
    nonce: [u8; NONCE_LEN],
    ciphertext_len: usize,
}

impl BackupHeader {
    /// Parses and checks the header of `file` (no passphrase, no KDF): magic, version,
    /// algorithm identifiers, lengths. Use it to show which account a file is for before
    /// asking for its passphrase.
    pub fn parse(file: &[u8]) -> Result<Self, BackupError> {
        if file.len() > MAX_BACKUP_LEN {
            return Err(BackupError::NotABackup("larger than any backup"));
        }
        if file.len() < MAGIC.len() + 1 || &file[..MAGIC.len()] != MAGIC {
            return Err(BackupError::NotABackup("it does not start with the backup magic"));
        }
        match file[MAGIC.len()] {
            1 => Self::parse_v1(file),
            v => Err(BackupError::UnsupportedVersion(v)),
        }
    }

    fn parse_v1(file: &[u8]) -> Result<Self, BackupError> {
        if file.len() < HEADER_LEN_V1 {
            return Err(BackupError::Malformed("truncated header"));
        }
        let mut r = Reader(&file[MAGIC.len() + 1..HEADER_LEN_V1]);
        let kdf_id = r.u8()?;
        if kdf_id != KDF_ARGON2ID_V13 {
            return Err(BackupError::UnsupportedAlgorithm {
                what: "KDF",
                id: kdf_id,
            });
        }
        let kdf = KdfParams {
            m_cost_kib: r.u32()?,
            t_cost: r.u32()?,
            p_cost: r.u32()?,
        };
        let salt = r.array::<SALT_LEN>()?;
        let aead_id = r.u8()?;
        if aead_id != AEAD_XCHACHA20POLY1305 {
            return Err(BackupError::UnsupportedAlgorithm {
                what: "cipher",
                id: aead_id,
            });
        }
        let nonce = r.array::<NONCE_LEN>()?;
        let account_id = AccountId::parse(&hex::encode(r.array::<16>()?))
            .map_err(|_| BackupError::Malformed("invalid account id"))?;
        let public_key =
            PublicKey::from_sec1(&r.array::<33>()?).map_err(|_| BackupError::Malformed("invalid public key"))?;
        let ciphertext_len = r.u32()? as usize;
        if ciphertext_len < TAG_LEN {
            return Err(BackupError::Malformed("ciphertext shorter than its tag"));
        }
        if file.len() - HEADER_LEN_V1 != ciphertext_len {
            return Err(BackupError::Malformed(
                "file length does not match the ciphertext length",
            ));
        }
        Ok(BackupHeader {
            version: 1,
            kdf,
            account_id,
            public_key,
            salt,
            nonce,
            ciphertext_len,
        })
    }

    fn encode_v1(&self) -> [u8; HEADER_LEN_V1] {
        let mut h = [0u8; HEADER_LEN_V1];
        let mut w = Writer { buf: &mut h, at: 0 };
        w.put(MAGIC);
        w.put(&[FORMAT_VERSION, KDF_ARGON2ID_V13]);
        w.put(&self.kdf.m_cost_kib.to_be_bytes());
        w.put(&self.kdf.t_cost.to_be_bytes());
        w.put(&self.kdf.p_cost.to_be_bytes());
        w.put(&self.salt);
        w.put(&[AEAD_XCHACHA20POLY1305]);
        w.put(&self.nonce);
        w.put(self.account_id.as_bytes());
        w.put(&self.public_key.to_compressed());
        // invariant: the length is checked against MAX_BACKUP_LEN (< 4 GiB) by the caller.
        w.put(&(self.ciphertext_len as u32).to_be_bytes());
        h
    }
}

/// What a backup holds: the account (device share and auth key included, with the
/// generation the device last saw and its misbehaved mark) and the enclave images the
/// user accepts, so a restored device trusts the same enclave images.
pub struct BackupContents {
    /// The account, as [`Account::to_json`] stored it.
    pub account: Account,
    /// Each accepted image's PCR index → value (48 bytes for SHA-384), possibly none.
    pub accepted_images: Vec<BTreeMap<u8, Vec<u8>>>,
    /// When the backup was made, Unix seconds (the device's clock).
    pub created_at: u64,
}

impl BackupContents {
    /// Contents holding `account` and no image, dated now.
    pub fn new(account: Account) -> Self {
        BackupContents {
            account,
            accepted_images: Vec::new(),
            created_at: unix_now(),
        }
    }

    /// Adds the enclave images the user accepts.
    pub fn with_accepted_images(mut self, images: &[crate::attestation::ImageMeasurements]) -> Self {
        self.accepted_images = images.iter().map(|i| i.pcrs().clone()).collect();
        self
    }

    /// The accepted images that are valid measurements (others are skipped).
    pub fn images(&self) -> Vec<crate::attestation::ImageMeasurements> {
        self.accepted_images
            .iter()
            .filter_map(|m| crate::attestation::ImageMeasurements::new(m.clone()).ok())
            .collect()
    }

    fn encode(&self) -> Result<Zeroizing<Vec<u8>>, BackupError> {
        if self.accepted_images.len() > MAX_IMAGES
            || self
                .accepted_images
                .iter()
                .any(|m| m.len() > MAX_PCRS || m.values().any(|v| v.len() > MAX_PCR_LEN))
        {
            return Err(BackupError::Contents(format!(
                "at most {MAX_IMAGES} images of at most {MAX_PCRS} PCRs of at most {MAX_PCR_LEN} bytes"
            )));
        }
        let json = self
            .account
            .to_json()
            .map_err(|e| BackupError::Contents(e.to_string()))?;
        let json_len = u32::try_from(json.len()).map_err(|_| BackupError::Contents("account too large".into()))?;
        let mut out = Zeroizing::new(Vec::with_capacity(
            1 + 8 + 4 + json.len() + 1 + 200 * self.accepted_images.len(),
        ));
        out.push(CONTENTS_VERSION);
        out.extend_from_slice(&self.created_at.to_be_bytes());
        out.extend_from_slice(&json_len.to_be_bytes());
        out.extend_from_slice(json.as_bytes());
        // invariant: at most MAX_IMAGES (16) images of at most MAX_PCRS (32) entries of at most
        // MAX_PCR_LEN (64) bytes, checked above: every count fits a byte.
        out.push(self.accepted_images.len() as u8);
        for image in &self.accepted_images {
            out.push(image.len() as u8);
            for (index, value) in image {
                out.push(*index);
                out.push(value.len() as u8);
                out.extend_from_slice(value);
            }
        }
        Ok(out)
    }

    /// Reads one PCR map: a count, then (index, length, value) entries.
    fn decode_pcrs(r: &mut Reader<'_>) -> Result<BTreeMap<u8, Vec<u8>>, BackupError> {
        let bad = |what: &'static str| BackupError::Contents(what.into());
        let count = r.u8().map_err(|_| bad("truncated PCR list"))? as usize;
        if count > MAX_PCRS {
            return Err(bad("too many PCRs"));
        }
        let mut pcrs = BTreeMap::new();
        for _ in 0..count {
            let index = r.u8().map_err(|_| bad("truncated PCR"))?;
            let len = r.u8().map_err(|_| bad("truncated PCR"))? as usize;
            if len > MAX_PCR_LEN {
                return Err(bad("PCR value too long"));
            }
            let value = r.take(len).map_err(|_| bad("truncated PCR"))?;
            if pcrs.insert(index, value.to_vec()).is_some() {
                return Err(bad("a PCR is listed twice"));
            }
        }
        Ok(pcrs)
    }

    /// Decodes decrypted contents (version 1 or 2).
    pub fn from_plaintext(plain: &[u8]) -> Result<Self, BackupError> {
        let bad = |what: &'static str| BackupError::Contents(what.into());
        let mut r = Reader(plain);
        let version = r.u8().map_err(|_| bad("empty"))?;
        if version != CONTENTS_VERSION && version != CONTENTS_VERSION_1 {
            return Err(BackupError::Contents(format!("unknown contents version {version}")));
        }
        let created_at = u64::from_be_bytes(r.array::<8>().map_err(|_| bad("truncated"))?);
        let json_len = r.u32().map_err(|_| bad("truncated"))? as usize;
        let json = r.take(json_len).map_err(|_| bad("truncated account"))?;
        let json = std::str::from_utf8(json).map_err(|_| bad("the account is not UTF-8"))?;
        let account = Account::from_json(json).map_err(|e| BackupError::Contents(e.to_string()))?;
        let mut accepted_images = Vec::new();
        if version == CONTENTS_VERSION_1 {
            let pcrs = Self::decode_pcrs(&mut r)?;
            if !pcrs.is_empty() {
                accepted_images.push(pcrs);
            }
        } else {
            let images = r.u8().map_err(|_| bad("truncated image list"))? as usize;
            if images > MAX_IMAGES {
                return Err(bad("too many images"));
            }
            for _ in 0..images {
                accepted_images.push(Self::decode_pcrs(&mut r)?);
            }
        }
        if !r.0.is_empty() {
            return Err(bad("trailing bytes"));
        }
        Ok(BackupContents {
            account,
            accepted_images,
            created_at,
        })
    }
}

impl std::fmt::Debug for BackupContents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackupContents")
            .field("account", &self.account)
            .field("accepted_images", &self.accepted_images.len())
            .field("created_at", &self.created_at)
            .finish()
    }
}

/// What [`decrypt_with`] checks beyond the file's own integrity.
#[derive(Debug, Clone, Copy, Default)]
pub struct DecryptOptions {
    account_id: Option<AccountId>,
    public_key: Option<PublicKey>,
    limits: KdfLimits,
}

impl DecryptOptions {
    /// Standard limits, any account.
    pub fn new() -> Self {
        Self::default()
    }

    /// Refuses a backup of any other account (checked on the header before the KDF runs,
    /// and bound by the associated data).
    pub fn expect_account(mut self, id: AccountId) -> Self {
        self.account_id = Some(id);
        self
    }

    /// Refuses a backup of any other public key.
    pub fn expect_public_key(mut self, public_key: PublicKey) -> Self {
        self.public_key = Some(public_key);
        self
    }

    /// Replaces the KDF limits (see [`KdfLimits::danger_allow_weak`]).
    pub fn limits(mut self, limits: KdfLimits) -> Self {
        self.limits = limits;
        self
    }
}

/// The strength a new backup's passphrase needs: zxcvbn's score (0–4, an estimate of the
/// guesses an attacker who knows common passwords, words and patterns needs) of at least 3,
/// about 10⁸ guesses or more — against a file kept with a cloud provider, length alone
/// says little ("aaaaaaaaaa" is long). The rule applies to every backup this SDK writes.
pub const MIN_PASSPHRASE_SCORE: u8 = 3;

/// Checks a passphrase for a new backup: at least [`MIN_PASSPHRASE_CHARS`] characters and a
/// zxcvbn score of at least [`MIN_PASSPHRASE_SCORE`]. The error carries zxcvbn's advice.
pub fn check_passphrase(passphrase: &Passphrase) -> Result<(), BackupError> {
    if passphrase.chars() < MIN_PASSPHRASE_CHARS {
        return Err(BackupError::WeakPassphrase(format!(
            "use at least {MIN_PASSPHRASE_CHARS} characters (a few random words is better)"
        )));
    }
    let estimate = zxcvbn::zxcvbn(&passphrase.0, &[]);
    let score = u8::from(estimate.score());
    if score < MIN_PASSPHRASE_SCORE {
        let advice = estimate
            .feedback()
            .map(|f| {
                f.warning()
                    .map(|w| w.to_string())
                    .into_iter()
                    .chain(f.suggestions().iter().map(|s| s.to_string()))
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .filter(|a| !a.is_empty())
            .unwrap_or_else(|| "add more uncommon words".into());
        return Err(BackupError::WeakPassphrase(format!(
            "too easy to guess (strength {score} of 4, {MIN_PASSPHRASE_SCORE} needed): {advice}"
        )));
    }
    Ok(())
}

/// Encrypts `contents` under `passphrase` with the [`KdfParams::DEFAULT`] parameters.
/// Takes about half a second and 64 MiB: call it off the async runtime's workers.
pub fn encrypt(contents: &BackupContents, passphrase: &Passphrase) -> Result<Vec<u8>, BackupError> {
    encrypt_with(contents, passphrase, KdfParams::DEFAULT, &KdfLimits::STANDARD)
}

/// Encrypts with chosen parameters, which must lie within `limits` (so that whoever
/// decrypts with the same limits can read the file).
pub fn encrypt_with(
    contents: &BackupContents,
    passphrase: &Passphrase,
    kdf: KdfParams,
    limits: &KdfLimits,
) -> Result<Vec<u8>, BackupError> {
    check_passphrase(passphrase)?;
    limits.check(kdf)?;
    let plaintext = contents.encode()?;
    let ciphertext_len = plaintext.len() + TAG_LEN;
    if HEADER_LEN_V1 + ciphertext_len > MAX_BACKUP_LEN {
        return Err(BackupError::Contents("the account is too large for a backup".into()));
    }
    let mut salt = [0u8; SALT_LEN];
    let mut nonce = [0u8; NONCE_LEN];
    getrandom::fill(&mut salt).map_err(|_| BackupError::Resource("system RNG failed"))?;
    getrandom::fill(&mut nonce).map_err(|_| BackupError::Resource("system RNG failed"))?;
    let header = BackupHeader {
        version: FORMAT_VERSION,
        kdf,
        account_id: contents.account.id(),
        public_key: contents.account.public_key(),
        salt,
        nonce,
        ciphertext_len,
    };
    let header_bytes = header.encode_v1();
    let key = derive_key(passphrase, &salt, kdf)?;
    let cipher = XChaCha20Poly1305::new(Key::from_slice(&key[..]));
    let mut buffer = Zeroizing::new(Vec::with_capacity(ciphertext_len));
    buffer.extend_from_slice(&plaintext);
    cipher
        .encrypt_in_place(XNonce::from_slice(&nonce), &header_bytes, &mut *buffer)
        .map_err(|_| BackupError::Resource("encryption failed"))?;
    let mut file = Vec::with_capacity(HEADER_LEN_V1 + buffer.len());
    file.extend_from_slice(&header_bytes);
    file.extend_from_slice(&buffer);
    Ok(file)
}

/// Decrypts a backup with the standard limits and no expectation about the account.
pub fn decrypt(file: &[u8], passphrase: &Passphrase) -> Result<BackupContents, BackupError> {
    decrypt_with(file, passphrase, &DecryptOptions::new())
}

/// Decrypts a backup. In order: header checks, the KDF limits and the expected account
/// (all before any memory is allocated for the KDF), then the KDF, the AEAD, and finally
/// the contents (the account inside must be the one the header names).
pub fn decrypt_with(
    file: &[u8],
    passphrase: &Passphrase,
    opts: &DecryptOptions,
) -> Result<BackupContents, BackupError> {
    let header = BackupHeader::parse(file)?;
    opts.limits.check(header.kdf)?;
    if let Some(expected) = opts.account_id
        && expected != header.account_id
    {
        return Err(BackupError::WrongAccount {
            expected,
            found: header.account_id,
        });
    }
    if let Some(pk) = opts.public_key
        && pk != header.public_key
    {
        return Err(BackupError::WrongPublicKey(header.account_id));
    }
    let header_bytes = &file[..HEADER_LEN_V1];
    let key = derive_key(passphrase, &header.salt, header.kdf)?;
    let cipher = XChaCha20Poly1305::new(Key::from_slice(&key[..]));
    // The tag is verified before anything is decrypted: on failure the buffer held only
    // ciphertext, and on success the plaintext goes straight into a zeroizing wrapper.
    let plaintext = Zeroizing::new(
        cipher
            .decrypt(
                XNonce::from_slice(&header.nonce),
                Payload {
                    msg: &file[HEADER_LEN_V1..],
                    aad: header_bytes,
                },
            )
            .map_err(|_| BackupError::Decryption)?,
    );
    let contents = BackupContents::from_plaintext(&plaintext)?;
    if contents.account.id() != header.account_id || contents.account.public_key() != header.public_key {
        return Err(BackupError::Contents(
            "the account inside differs from the one the header names".into(),
        ));
    }
    Ok(contents)
}

/// Argon2id(passphrase, salt) → 32-byte key. The KDF's memory is allocated here (after
/// the limits were checked), fallibly, and wiped before it is freed: it holds values
/// derived from the passphrase that would make guessing it cheap.
fn derive_key(passphrase: &Passphrase, salt: &[u8], kdf: KdfParams) -> Result<Zeroizing<[u8; KEY_LEN]>, BackupError> {
    let params = Params::new(kdf.m_cost_kib, kdf.t_cost, kdf.p_cost, Some(KEY_LEN))
        .map_err(|_| BackupError::InvalidKdfParams(kdf))?;
    let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
    let blocks = argon.params().block_count();
    let mut memory: Vec<Block> = Vec::new();
    memory
        .try_reserve_exact(blocks)
        .map_err(|_| BackupError::Resource("not enough memory for the key derivation"))?;
    memory.resize(blocks, Block::new());
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    let result = argon.hash_password_into_with_memory(passphrase.as_bytes(), salt, &mut key[..], &mut memory[..]);
    memory.zeroize();
    result.map_err(|_| BackupError::InvalidKdfParams(kdf))?;
    Ok(key)
}

impl Client {
    /// Restores a backup: decrypts it (off the async workers), then runs the enclave's
    /// recovery check ([`Client::recover`]), which proves the restored share matches the
    /// account. Only contents that passed both are returned: persist them then, not before.
    /// A share that does not match fails with `RECOVERY_FAILED` (e.g. a backup made before
    /// a refresh that has since been confirmed).
    pub async fn restore_backup(
        &self,
        file: Vec<u8>,
        passphrase: Passphrase,
        opts: DecryptOptions,
    ) -> Result<BackupContents, SdkError> {
        let contents = tokio::task::spawn_blocking(move || decrypt_with(&file, &passphrase, &opts))
            .await
            .map_err(|_| SdkError::Storage("the decryption task was cancelled".into()))??;
        self.recover(&contents.account).await?;
        Ok(contents)
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Reads big-endian fields off a slice; running out is [`BackupError::Malformed`].
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], BackupError> {
        if self.0.len() < n {
            return Err(BackupError::Malformed("truncated"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], BackupError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, BackupError> {
        Ok(self.array::<1>()?[0])
    }

    fn u32(&mut self) -> Result<u32, BackupError> {
        Ok(u32::from_be_bytes(self.array::<4>()?))
    }
}

/// Writes into a fixed header buffer whose layout adds up (see [`HEADER_LEN_V1`]).
struct Writer<'a> {
    buf: &'a mut [u8],
    at: usize,
}

impl Writer<'_> {
    fn put(&mut self, bytes: &[u8]) {
        // invariant: encode_v1 writes exactly HEADER_LEN_V1 bytes, checked by the tests.
        if let Some(dst) = self.buf.get_mut(self.at..self.at + bytes.len()) {
            dst.copy_from_slice(bytes);
        }
        self.at += bytes.len();
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::account::tests::{test_account, test_account_2};

    fn pass(s: &str) -> Passphrase {
        Passphrase::new(s.to_string())
    }

    /// Argon2id's own minimum: a backup that decrypts in microseconds, for tests that
    /// decrypt thousands of variants of one file.
    const CHEAP: KdfParams = KdfParams {
        m_cost_kib: 8,
        t_cost: 1,
        p_cost: 1,
    };

    fn weak() -> DecryptOptions {
        DecryptOptions::new().limits(KdfLimits::danger_allow_weak())
    }

    fn image(b: u8) -> crate::attestation::ImageMeasurements {
        crate::attestation::ImageMeasurements::new([(0u8, vec![b; 48]), (1, vec![b; 48]), (2, vec![b; 48])].into())
            .unwrap()
    }

    fn cheap_backup(account: &Account, passphrase: &str) -> Vec<u8> {
        let contents = BackupContents::new(account.clone()).with_accepted_images(&[image(0xab), image(0xcd)]);
        encrypt_with(&contents, &pass(passphrase), CHEAP, &KdfLimits::danger_allow_weak()).unwrap()
    }

    /// RFC 9106 §5.3: Argon2id, version 0x13, with secret and associated data, through the
    /// same crate and algorithm the backups use.
    #[test]
    fn rfc9106_argon2id_test_vector() {
        let params = argon2::ParamsBuilder::new()
            .m_cost(32)
            .t_cost(3)
            .p_cost(4)
            .data(argon2::AssociatedData::new(&[0x04; 12]).unwrap())
            .output_len(32)
            .build()
            .unwrap();
        let secret = [0x03; 8];
        let argon = Argon2::new_with_secret(&secret, Algorithm::Argon2id, Version::V0x13, params).unwrap();
        let mut tag = [0u8; 32];
        argon.hash_password_into(&[0x01; 32], &[0x02; 16], &mut tag).unwrap();
        assert_eq!(
            hex::encode(tag),
            "0d640df58d78766c08c037a34a8b53c9d01ef0452d75b65eb52520e96b01e659"
        );
    }

    #[test]
    fn header_layout_adds_up() {
        let account = test_account();
        let file = cheap_backup(&account, "correct horse battery");
        assert_eq!(&file[..8], MAGIC);
        assert_eq!(file[8], 1);
        let header = BackupHeader::parse(&file).unwrap();
        assert_eq!(header.encode_v1()[..], file[..HEADER_LEN_V1]);
        assert_eq!(header.kdf, CHEAP);
        assert_eq!(header.account_id, account.id());
        assert_eq!(header.public_key, account.public_key());
        assert_eq!(&file[63..79], account.id().as_bytes());
        assert_eq!(file[79..112], account.public_key().to_compressed());
        assert_eq!(file.len(), HEADER_LEN_V1 + header.ciphertext_len);
    }

    #[test]
    fn round_trip_at_default_parameters() {
        let account = test_account();
        let contents = BackupContents::new(account.clone()).with_accepted_images(&[image(7)]);
        let started = Instant::now();
        let file = encrypt(&contents, &pass("correct horse battery staple")).unwrap();
        let encrypt_time = started.elapsed();
        assert_eq!(BackupHeader::parse(&file).unwrap().kdf, KdfParams::DEFAULT);
        let started = Instant::now();
        let back = decrypt(&file, &pass("correct horse battery staple")).unwrap();
        eprintln!(
            "default Argon2id (64 MiB, t=3): encrypt {:?}, decrypt {:?}, file {} bytes",
            encrypt_time,
            started.elapsed(),
            file.len()
        );
        assert_eq!(*back.account.to_json().unwrap(), *account.to_json().unwrap());
        assert_eq!(back.images(), vec![image(7)]);
        assert_eq!(back.created_at, contents.created_at);
        // Fresh salt and nonce every time: two backups of the same account differ.
        let again = encrypt(&contents, &pass("correct horse battery staple")).unwrap();
        assert_ne!(again, file);
    }

    #[test]
    fn wrong_passphrase_fails() {
        let account = test_account();
        let file = cheap_backup(&account, "correct horse battery");
        assert_eq!(
            decrypt_with(&file, &pass("correct horse battery!"), &weak()).unwrap_err(),
            BackupError::Decryption
        );
        assert_eq!(
            decrypt_with(&file, &pass(""), &weak()).unwrap_err(),
            BackupError::Decryption
        );
        decrypt_with(&file, &pass("correct horse battery"), &weak()).unwrap();
    }

    #[test]
    fn a_flipped_bit_in_any_byte_fails() {
        let account = test_account();
        let file = cheap_backup(&account, "correct horse battery");
        decrypt_with(&file, &pass("correct horse battery"), &weak()).unwrap();
        let p = pass("correct horse battery");
        let mut kinds = BTreeMap::<String, usize>::new();
        let mut bad = file.clone();
        for i in 0..file.len() {
            // One bit per byte, walking through the bit positions; in the header (where
            // each field has its own check) every bit.
            let bits = if i < HEADER_LEN_V1 { 0..8 } else { (i % 8)..(i % 8 + 1) };
            for bit in bits {
                bad[i] ^= 1 << bit;
                let err = match decrypt_with(&bad, &p, &weak()) {
                    Ok(_) => panic!("a flipped bit {bit} in byte {i} of {} went unnoticed", file.len()),
                    Err(e) => e,
                };
                bad[i] ^= 1 << bit;
                let kind = format!("{err:?}");
                *kinds
                    .entry(kind.split(['(', ' ', '{']).next().unwrap_or_default().to_string())
                    .or_default() += 1;
            }
        }
        assert_eq!(bad, file);
        // Most flips reach the AEAD; header flips are caught earlier, by their own checks.
        assert!(kinds["Decryption"] > file.len() - HEADER_LEN_V1, "{kinds:?}");
        for expected in [
            "NotABackup",
            "UnsupportedVersion",
            "UnsupportedAlgorithm",
            "KdfAboveCeiling",
        ] {
            assert!(kinds.contains_key(expected), "no {expected} among {kinds:?}");
        }
        // Truncation and extension are refused too.
        for len in [0, 8, 9, HEADER_LEN_V1 - 1, HEADER_LEN_V1, file.len() - 1] {
            assert!(decrypt_with(&file[..len], &pass("correct horse battery"), &weak()).is_err());
        }
        let mut longer = file;
        longer.push(0);
        assert!(matches!(
            decrypt_with(&longer, &pass("correct horse battery"), &weak()),
            Err(BackupError::Malformed(_))
        ));
    }

    #[test]
    fn another_accounts_backup_is_refused() {
        let (a, b) = (test_account(), test_account_2());
        let file_b = cheap_backup(&b, "correct horse battery");
        let p = pass("correct horse battery");
        // The caller expects A: B's backup is refused before the KDF runs.
        let err = decrypt_with(&file_b, &p, &weak().expect_account(a.id())).unwrap_err();
        assert_eq!(
            err,
            BackupError::WrongAccount {
                expected: a.id(),
                found: b.id()
            }
        );
        let err = decrypt_with(
            &file_b,
            &p,
            &weak().expect_account(b.id()).expect_public_key(a.public_key()),
        )
        .unwrap_err();
        assert_eq!(err, BackupError::WrongPublicKey(b.id()));
        // Relabelling B's file as A's (header rewritten) breaks the associated data.
        let mut forged = file_b.clone();
        forged[63..79].copy_from_slice(a.id().as_bytes());
        forged[79..112].copy_from_slice(&a.public_key().to_compressed());
        let err = decrypt_with(&forged, &p, &weak().expect_account(a.id())).unwrap_err();
        assert_eq!(err, BackupError::Decryption);
        // B's own expectations pass.
        let back = decrypt_with(
            &file_b,
            &p,
            &weak().expect_account(b.id()).expect_public_key(b.public_key()),
        )
        .unwrap();
        assert_eq!(back.account.id(), b.id());
    }

    fn with_params(file: &[u8], kdf: KdfParams) -> Vec<u8> {
        let mut f = file.to_vec();
        f[10..14].copy_from_slice(&kdf.m_cost_kib.to_be_bytes());
        f[14..18].copy_from_slice(&kdf.t_cost.to_be_bytes());
        f[18..22].copy_from_slice(&kdf.p_cost.to_be_bytes());
        f
    }

    #[track_caller]
    fn refused_quickly(file: &[u8], opts: &DecryptOptions) -> BackupError {
        // At the floor (19 MiB, t = 2) Argon2id alone takes tens of milliseconds, at the
        // hostile values below seconds to hours: a refusal in under 20 ms did no KDF work.
        // The best of three runs, so a busy machine's scheduling does not fail the test.
        let mut fastest = Duration::MAX;
        let mut error = None;
        for _ in 0..3 {
            let started = Instant::now();
            let err = decrypt_with(file, &pass("correct horse battery"), opts).unwrap_err();
            fastest = fastest.min(started.elapsed());
            error = Some(err);
        }
        assert!(fastest < Duration::from_millis(20), "refusal took {fastest:?}");
        error.unwrap()
    }

    /// Review finding L3: a hostile backup may ask for at most 256 MiB and 4 passes unless
    /// the caller opts in to more.
    #[test]
    fn the_standard_ceiling_is_256_mib_and_4_passes_and_more_needs_an_opt_in() {
        let ceiling = KdfLimits::STANDARD.ceiling();
        assert_eq!((ceiling.m_cost_kib, ceiling.t_cost), (256 * 1024, 4));
        let old_default_ceiling = KdfParams {
            m_cost_kib: 1024 * 1024,
            t_cost: 10,
            p_cost: 4,
        };
        assert!(matches!(
            KdfLimits::STANDARD.check(old_default_ceiling),
            Err(BackupError::KdfAboveCeiling { .. })
        ));
        KdfLimits::danger_allow_expensive().check(old_default_ceiling).unwrap();
        KdfLimits::STANDARD.check(KdfParams::DEFAULT).unwrap();
    }

    #[test]
    fn parameters_outside_the_limits_are_refused_before_any_work() {
        let account = test_account();
        let file = cheap_backup(&account, "correct horse battery");
        let standard = DecryptOptions::new();
        let floor = KdfLimits::STANDARD.floor();
        let ceiling = KdfLimits::STANDARD.ceiling();

        // The floor applies to normal decryption: the cheap test file itself is refused.
        assert_eq!(
            refused_quickly(&file, &standard),
            BackupError::KdfBelowFloor { found: CHEAP, floor }
        );
        for low in [
            KdfParams {
                m_cost_kib: floor.m_cost_kib - 1,
                ..KdfParams::DEFAULT
            },
            KdfParams {
                t_cost: 1,
                ..KdfParams::DEFAULT
            },
            KdfParams {
                p_cost: 0,
                ..KdfParams::DEFAULT
            },
        ] {
            let err = refused_quickly(&with_params(&file, low), &standard);
            assert_eq!(err, BackupError::KdfBelowFloor { found: low, floor });
        }
        // Above the ceiling: 4 TiB, a billion passes, 16M lanes; and just above each bound.
        for high in [
            KdfParams {
                m_cost_kib: u32::MAX,
                ..KdfParams::DEFAULT
            },
            KdfParams {
                m_cost_kib: ceiling.m_cost_kib + 1,
                ..KdfParams::DEFAULT
            },
            KdfParams {
                t_cost: 1_000_000_000,
                ..KdfParams::DEFAULT
            },
            KdfParams {
                t_cost: ceiling.t_cost + 1,
                ..KdfParams::DEFAULT
            },
            KdfParams {
                p_cost: 0xFF_FFFF,
                ..KdfParams::DEFAULT
            },
            KdfParams {
                p_cost: ceiling.p_cost + 1,
                ..KdfParams::DEFAULT
            },
        ] {
            for opts in [standard, weak()] {
                let err = refused_quickly(&with_params(&file, high), &opts);
                assert_eq!(err, BackupError::KdfAboveCeiling { found: high, ceiling });
            }
        }
        // Argon2id's own rule (8 KiB per lane) is checked before allocating too.
        let odd = KdfParams {
            m_cost_kib: 8,
            t_cost: 1,
            p_cost: 2,
        };
        assert_eq!(
            refused_quickly(&with_params(&file, odd), &weak()),
            BackupError::InvalidKdfParams(odd)
        );
        // Encryption refuses the same ranges.
        let contents = BackupContents::new(account);
        assert!(matches!(
            encrypt_with(&contents, &pass("correct horse battery"), CHEAP, &KdfLimits::STANDARD),
            Err(BackupError::KdfBelowFloor { .. })
        ));
        assert!(matches!(
            encrypt_with(
                &contents,
                &pass("correct horse battery"),
                KdfParams {
                    t_cost: 11,
                    ..KdfParams::DEFAULT
                },
                &KdfLimits::STANDARD
            ),
            Err(BackupError::KdfAboveCeiling { .. })
        ));
    }

    #[test]
    fn unknown_versions_and_algorithms_are_refused() {
        let account = test_account();
        let file = cheap_backup(&account, "correct horse battery");
        for v in [0u8, 2, 255] {
            let mut f = file.clone();
            f[8] = v;
            assert_eq!(
                decrypt_with(&f, &pass("correct horse battery"), &weak()).unwrap_err(),
                BackupError::UnsupportedVersion(v)
            );
            assert_eq!(BackupHeader::parse(&f).unwrap_err(), BackupError::UnsupportedVersion(v));
        }
        let mut f = file.clone();
        f[9] = 2; // Argon2i, say
        assert_eq!(
            BackupHeader::parse(&f).unwrap_err(),
            BackupError::UnsupportedAlgorithm { what: "KDF", id: 2 }
        );
        let mut f = file;
        f[38] = 2; // AES-256-GCM, say
        assert_eq!(
            BackupHeader::parse(&f).unwrap_err(),
            BackupError::UnsupportedAlgorithm { what: "cipher", id: 2 }
        );
        assert!(matches!(
            BackupHeader::parse(b"{\"version\":2}").unwrap_err(),
            BackupError::NotABackup(_)
        ));
        assert!(matches!(
            BackupHeader::parse(&vec![0u8; MAX_BACKUP_LEN + 1]).unwrap_err(),
            BackupError::NotABackup(_)
        ));
    }

    #[test]
    fn short_passphrases_are_refused_and_passphrases_never_print() {
        let account = test_account();
        let err = encrypt_with(
            &BackupContents::new(account),
            &pass("short"),
            CHEAP,
            &KdfLimits::danger_allow_weak(),
        )
        .unwrap_err();
        assert!(matches!(err, BackupError::WeakPassphrase(_)));
        // Long is not enough: guessable passphrases are refused by their estimated
        // strength, with advice.
        for weak in ["aaaaaaaaaaaaaaaa", "password12345", "qwertyuiop", "1234567890"] {
            let err = check_passphrase(&pass(weak)).unwrap_err();
            assert!(
                matches!(&err, BackupError::WeakPassphrase(m) if m.contains("strength")),
                "{weak}: {err:?}"
            );
        }
        for strong in ["correct horse battery", "tangerine ostrich violin 42"] {
            check_passphrase(&pass(strong)).unwrap_or_else(|e| panic!("{strong}: {e}"));
        }
        let p = pass("hunter2hunter2");
        assert!(!format!("{p:?}").contains("hunter2"));
        assert_eq!(p, pass("hunter2hunter2"));
        assert_eq!(pass("żółw żółw").chars(), 9);
    }

    #[test]
    fn contents_that_lie_about_their_account_are_refused() {
        // The contents decode only as the account the header names: encrypt A's material
        // under a header naming B (as a buggy or malicious writer could), and check.
        let (a, b) = (test_account(), test_account_2());
        let contents = BackupContents::new(a);
        let plaintext = contents.encode().unwrap();
        let header = BackupHeader {
            version: 1,
            kdf: CHEAP,
            account_id: b.id(),
            public_key: b.public_key(),
            salt: [1; SALT_LEN],
            nonce: [2; NONCE_LEN],
            ciphertext_len: plaintext.len() + TAG_LEN,
        };
        let header_bytes = header.encode_v1();
        let key = derive_key(&pass("correct horse battery"), &header.salt, CHEAP).unwrap();
        let mut buffer = plaintext.to_vec();
        XChaCha20Poly1305::new(Key::from_slice(&key[..]))
            .encrypt_in_place(XNonce::from_slice(&header.nonce), &header_bytes, &mut buffer)
            .unwrap();
        let mut file = header_bytes.to_vec();
        file.extend_from_slice(&buffer);
        let err = decrypt_with(&file, &pass("correct horse battery"), &weak()).unwrap_err();
        assert!(matches!(err, BackupError::Contents(_)), "{err:?}");
    }
}
