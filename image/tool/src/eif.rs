//! The Enclave Image Format (EIF, version 4), written and read from its definition in AWS's
//! `aws-nitro-enclaves-image-format` (`src/defs/mod.rs`, `src/utils/mod.rs`); our tests
//! read what we write with that crate's own reader, so the two cannot drift apart unseen.
//!
//! Layout (all integers big-endian):
//!
//! ```text
//! header (548 bytes): magic ".eif", version u16, flags u16, default_mem u64,
//!                     default_cpus u64, reserved u16, num_sections u16,
//!                     section_offsets [u64; 32], section_sizes [u64; 32], unused u32,
//!                     crc32 u32 (IEEE, over every byte of the file except this field)
//! sections, in this order, each a 12-byte header (type u16, flags u16, size u64) + data:
//!   kernel (1), cmdline (2), metadata (5, JSON), ramdisk (3) …, signature (4, optional)
//! ```
//!
//! Offsets in the header point at each section's *header*. The measurements (PCRs) are in
//! [`crate::pcr`]; metadata and the signature are not measured.

use crate::pcr::{Measurements, Pcrs};

/// `.eif`.
pub const MAGIC: [u8; 4] = *b".eif";
/// The format version AWS's builder writes today (V4: metadata section).
pub const VERSION: u16 = 4;
/// Size of the file header.
pub const HEADER_SIZE: usize = 548;
/// Size of a section header.
pub const SECTION_HEADER_SIZE: usize = 12;
const MAX_SECTIONS: usize = 32;

/// A section's type, as numbered by the format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub enum SectionType {
    /// The kernel (bzImage).
    Kernel,
    /// The kernel command line (no trailing NUL).
    Cmdline,
    /// An initramfs (cpio).
    Ramdisk,
    /// CBOR: the signing certificate and a COSE_Sign1 over PCR0.
    Signature,
    /// JSON: build information (not measured).
    Metadata,
}

impl SectionType {
    fn code(self) -> u16 {
        match self {
            SectionType::Kernel => 1,
            SectionType::Cmdline => 2,
            SectionType::Ramdisk => 3,
            SectionType::Signature => 4,
            SectionType::Metadata => 5,
        }
    }

    fn from_code(code: u16) -> Option<Self> {
        Some(match code {
            1 => SectionType::Kernel,
            2 => SectionType::Cmdline,
            3 => SectionType::Ramdisk,
            4 => SectionType::Signature,
            5 => SectionType::Metadata,
            _ => return None,
        })
    }
}

/// The parts of an image, before they are laid out.
#[derive(Debug, Clone)]
pub struct Image {
    /// The kernel.
    pub kernel: Vec<u8>,
    /// The kernel command line.
    pub cmdline: String,
    /// JSON build information.
    pub metadata: Vec<u8>,
    /// The ramdisks: the first is the bootstrap (PCR1), the rest the application (PCR2).
    pub ramdisks: Vec<Vec<u8>>,
    /// Memory and vCPUs nitro-cli uses when not told otherwise (AWS's defaults: 1 GiB, 2).
    pub default_mem: u64,
    /// See `default_mem`.
    pub default_cpus: u64,
}

impl Image {
    /// The measurements of these parts (what the Nitro hypervisor will compute).
    pub fn measure(&self) -> Pcrs {
        let mut m = Measurements::new();
        m.kernel_and_cmdline(&self.kernel, self.cmdline.as_bytes());
        for (i, r) in self.ramdisks.iter().enumerate() {
            m.ramdisk(i, r);
        }
        m.finish()
    }

    /// The sections in file order, the signature (if any) last.
    fn sections<'a>(&'a self, signature: Option<&'a [u8]>) -> Vec<(SectionType, &'a [u8])> {
        let mut s = vec![
            (SectionType::Kernel, self.kernel.as_slice()),
            (SectionType::Cmdline, self.cmdline.as_bytes()),
            (SectionType::Metadata, self.metadata.as_slice()),
        ];
        s.extend(self.ramdisks.iter().map(|r| (SectionType::Ramdisk, r.as_slice())));
        if let Some(sig) = signature {
            s.push((SectionType::Signature, sig));
        }
        s
    }

    /// The whole file, with `signature` (the CBOR signature section) when signed.
    pub fn to_bytes(&self, signature: Option<&[u8]>) -> Result<Vec<u8>, String> {
        let sections = self.sections(signature);
        if sections.len() > MAX_SECTIONS {
            return Err(format!(
                "{} sections; an EIF holds at most {MAX_SECTIONS}",
                sections.len()
            ));
        }
        let mut offsets = [0u64; MAX_SECTIONS];
        let mut sizes = [0u64; MAX_SECTIONS];
        let mut at = HEADER_SIZE as u64;
        for (i, (_, data)) in sections.iter().enumerate() {
            offsets[i] = at;
            sizes[i] = data.len() as u64;
            at += (SECTION_HEADER_SIZE + data.len()) as u64;
        }
        let mut out = Vec::with_capacity(at as usize);
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&VERSION.to_be_bytes());
        out.extend_from_slice(&0u16.to_be_bytes()); // flags: x86_64
        out.extend_from_slice(&self.default_mem.to_be_bytes());
        out.extend_from_slice(&self.default_cpus.to_be_bytes());
        out.extend_from_slice(&0u16.to_be_bytes()); // reserved
        out.extend_from_slice(&(sections.len() as u16).to_be_bytes());
        offsets.iter().for_each(|o| out.extend_from_slice(&o.to_be_bytes()));
        sizes.iter().for_each(|s| out.extend_from_slice(&s.to_be_bytes()));
        out.extend_from_slice(&0u32.to_be_bytes()); // unused
        let crc_at = out.len();
        out.extend_from_slice(&[0; 4]);
        debug_assert_eq!(out.len(), HEADER_SIZE);
        for (kind, data) in &sections {
            out.extend_from_slice(&kind.code().to_be_bytes());
            out.extend_from_slice(&0u16.to_be_bytes());
            out.extend_from_slice(&(data.len() as u64).to_be_bytes());
            out.extend_from_slice(data);
        }
        let mut crc = crc32fast::Hasher::new();
        crc.update(&out[..crc_at]);
        crc.update(&out[crc_at + 4..]);
        out[crc_at..crc_at + 4].copy_from_slice(&crc.finalize().to_be_bytes());
        Ok(out)
    }
}

/// One section read back.
#[derive(Debug, Clone)]
pub struct Section {
    /// Its type.
    pub kind: SectionType,
    /// Where its header starts in the file.
    pub offset: u64,
    /// Its data.
    pub data: Vec<u8>,
}

/// An EIF read back and checked: header fields, offsets and sizes against the sections
/// found, the CRC.
#[derive(Debug, Clone)]
pub struct ReadImage {
    /// Format version.
    pub version: u16,
    /// Header flags.
    pub flags: u16,
    /// Default memory, bytes.
    pub default_mem: u64,
    /// Default vCPUs.
    pub default_cpus: u64,
    /// The sections in file order.
    pub sections: Vec<Section>,
}

fn be_u16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn be_u64(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(x)
}

/// Reads and checks an EIF. Every inconsistency is an error: a wrong magic or CRC, a header
/// whose offsets or sizes disagree with the sections, an unknown section type, trailing bytes.
pub fn read(bytes: &[u8]) -> Result<ReadImage, String> {
    if bytes.len() < HEADER_SIZE {
        return Err("shorter than an EIF header".into());
    }
    if bytes[..4] != MAGIC {
        return Err("not an EIF (bad magic)".into());
    }
    let crc_at = HEADER_SIZE - 4;
    let stored = u32::from_be_bytes([bytes[crc_at], bytes[crc_at + 1], bytes[crc_at + 2], bytes[crc_at + 3]]);
    let mut crc = crc32fast::Hasher::new();
    crc.update(&bytes[..crc_at]);
    crc.update(&bytes[HEADER_SIZE..]);
    if crc.finalize() != stored {
        return Err("CRC mismatch".into());
    }
    let num = be_u16(bytes, 26) as usize;
    if num > MAX_SECTIONS {
        return Err(format!("{num} sections"));
    }
    let mut sections = Vec::with_capacity(num);
    let mut at = HEADER_SIZE;
    for i in 0..num {
        let offset = be_u64(bytes, 28 + 8 * i);
        let size = be_u64(bytes, 28 + 8 * MAX_SECTIONS + 8 * i);
        if offset != at as u64 {
            return Err(format!("section {i}: header says offset {offset}, found at {at}"));
        }
        let head = bytes
            .get(at..at + SECTION_HEADER_SIZE)
            .ok_or_else(|| format!("section {i}: truncated header"))?;
        let kind = SectionType::from_code(be_u16(head, 0)).ok_or_else(|| format!("section {i}: unknown type"))?;
        let len = be_u64(head, 4);
        if len != size {
            return Err(format!("section {i}: size {len}, header says {size}"));
        }
        let start = at + SECTION_HEADER_SIZE;
        let end = usize::try_from(len)
            .ok()
            .and_then(|l| start.checked_add(l))
            .filter(|&e| e <= bytes.len())
            .ok_or_else(|| format!("section {i}: truncated data"))?;
        sections.push(Section {
            kind,
            offset,
            data: bytes[start..end].to_vec(),
        });
        at = end;
    }
    if at != bytes.len() {
        return Err(format!("{} bytes after the last section", bytes.len() - at));
    }
    Ok(ReadImage {
        version: be_u16(bytes, 4),
        flags: be_u16(bytes, 6),
        default_mem: be_u64(bytes, 8),
        default_cpus: be_u64(bytes, 16),
        sections,
    })
}

impl ReadImage {
    /// The data of every section of one type, in order.
    pub fn of(&self, kind: SectionType) -> Vec<&[u8]> {
        self.sections
            .iter()
            .filter(|s| s.kind == kind)
            .map(|s| s.data.as_slice())
            .collect()
    }

    /// PCR0, PCR1, PCR2 computed from the sections read (PCR8 needs the certificate:
    /// [`crate::sign::pcr8_of_section`]).
    pub fn measure(&self) -> Pcrs {
        let mut m = Measurements::new();
        let kernel = self.of(SectionType::Kernel).concat();
        let cmdline = self.of(SectionType::Cmdline).concat();
        m.kernel_and_cmdline(&kernel, &cmdline);
        for (i, r) in self.of(SectionType::Ramdisk).into_iter().enumerate() {
            m.ramdisk(i, r);
        }
        m.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image() -> Image {
        Image {
            kernel: b"kernel".to_vec(),
            cmdline: "console=ttyS0".into(),
            metadata: b"{}".to_vec(),
            ramdisks: vec![b"boot".to_vec(), b"app".to_vec()],
            default_mem: 1 << 30,
            default_cpus: 2,
        }
    }

    #[test]
    fn writes_what_it_reads() {
        let bytes = image().to_bytes(Some(b"sig")).unwrap();
        let r = read(&bytes).unwrap();
        let kinds: Vec<_> = r.sections.iter().map(|s| s.kind).collect();
        assert_eq!(
            kinds,
            [
                SectionType::Kernel,
                SectionType::Cmdline,
                SectionType::Metadata,
                SectionType::Ramdisk,
                SectionType::Ramdisk,
                SectionType::Signature
            ]
        );
        assert_eq!(r.of(SectionType::Ramdisk), [b"boot".as_slice(), b"app".as_slice()]);
        assert_eq!((r.version, r.flags, r.default_mem, r.default_cpus), (4, 0, 1 << 30, 2));
        assert_eq!(r.measure(), image().measure());
    }

    #[test]
    fn any_flipped_byte_is_caught() {
        let bytes = image().to_bytes(None).unwrap();
        for at in [0, 5, 30, HEADER_SIZE + 3, bytes.len() - 1] {
            let mut bad = bytes.clone();
            bad[at] ^= 1;
            assert!(read(&bad).is_err(), "flip at {at} went unnoticed");
        }
        assert!(read(&bytes[..bytes.len() - 1]).is_err());
        let mut longer = bytes;
        longer.push(0);
        assert!(read(&longer).is_err());
    }
}
