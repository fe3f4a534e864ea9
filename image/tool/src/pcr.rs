//! The image's measurements, as the Nitro hypervisor computes them (and nitro-cli prints):
//! SHA-384 over a region, then one TPM-style extend of a zero register with that digest.
//!
//! * PCR0: kernel, cmdline and every ramdisk, in order (the whole image);
//! * PCR1: kernel, cmdline and the first ramdisk (the bootstrap: our init);
//! * PCR2: the other ramdisks (the application: the enclave binary and its arguments);
//! * PCR8: the signing certificate (DER), when the image is signed.
//!
//! So a change in the enclave binary moves PCR2 and PCR0 and leaves PCR1 alone.

use sha2::{Digest, Sha384};

/// `SHA-384(zeros(48) || digest)`: one extend of a fresh register.
pub fn extend(digest: &[u8]) -> [u8; 48] {
    let mut h = Sha384::new();
    h.update([0u8; 48]);
    h.update(digest);
    h.finalize().into()
}

/// PCR8 of a signing certificate (DER).
pub fn pcr8(cert_der: &[u8]) -> [u8; 48] {
    extend(&Sha384::digest(cert_der))
}

/// PCR0, PCR1, PCR2 and, for a signed image, PCR8.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pcrs {
    /// The whole image.
    pub pcr0: [u8; 48],
    /// Kernel, cmdline, bootstrap ramdisk.
    pub pcr1: [u8; 48],
    /// The application ramdisks.
    pub pcr2: [u8; 48],
    /// The signing certificate.
    pub pcr8: Option<[u8; 48]>,
}

impl Pcrs {
    /// `{"PCR0": hex, "PCR1": hex, "PCR2": hex[, "PCR8": hex]}`, the shape
    /// `scripts/build-eif.sh` writes from nitro-cli's output.
    pub fn to_json(&self) -> String {
        let mut map = serde_json::Map::new();
        map.insert("PCR0".into(), hex::encode(self.pcr0).into());
        map.insert("PCR1".into(), hex::encode(self.pcr1).into());
        map.insert("PCR2".into(), hex::encode(self.pcr2).into());
        if let Some(p) = self.pcr8 {
            map.insert("PCR8".into(), hex::encode(p).into());
        }
        // serde_json's map keeps keys sorted: PCR0 < PCR1 < PCR2 < PCR8.
        let mut s = serde_json::to_string_pretty(&serde_json::Value::Object(map)).unwrap_or_default();
        s.push('\n');
        s
    }
}

/// Feeds the measured sections in file order.
#[derive(Debug, Clone, Default)]
pub(crate) struct Measurements {
    image: Sha384,
    bootstrap: Sha384,
    app: Sha384,
}

impl Measurements {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    pub(crate) fn kernel_and_cmdline(&mut self, kernel: &[u8], cmdline: &[u8]) {
        for part in [kernel, cmdline] {
            self.image.update(part);
            self.bootstrap.update(part);
        }
    }

    pub(crate) fn ramdisk(&mut self, index: usize, data: &[u8]) {
        self.image.update(data);
        if index == 0 {
            self.bootstrap.update(data);
        } else {
            self.app.update(data);
        }
    }

    pub(crate) fn finish(self) -> Pcrs {
        Pcrs {
            pcr0: extend(&self.image.finalize()),
            pcr1: extend(&self.bootstrap.finalize()),
            pcr2: extend(&self.app.finalize()),
            pcr8: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_json_has_the_build_eif_shape() {
        let p = Pcrs {
            pcr0: [0; 48],
            pcr1: [1; 48],
            pcr2: [2; 48],
            pcr8: None,
        };
        let v: serde_json::Value = serde_json::from_str(&p.to_json()).unwrap();
        let keys: Vec<_> = v.as_object().unwrap().keys().cloned().collect();
        assert_eq!(keys, ["PCR0", "PCR1", "PCR2"]);
        assert_eq!(v["PCR1"].as_str().unwrap(), "01".repeat(48));
    }

    #[test]
    fn an_extend_is_not_the_bare_digest() {
        let d = Sha384::digest(b"x");
        assert_ne!(extend(&d).to_vec(), d.to_vec());
    }
}
