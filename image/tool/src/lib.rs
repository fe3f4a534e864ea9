//! `tandem-image`: packs the Tandem enclave into an EIF without Docker, byte for byte the
//! same from the same inputs, and reads EIFs back.
//!
//! The image is a kernel given by path (nitro-cli's blob on a parent, any bzImage in tests),
//! its command line, and two uncompressed, reproducible initramfs archives: the bootstrap
//! (our init, the NSM module, `boot.conf`) and the application (the static enclave binary
//! and `enclave.conf`). See [`layout`] for what goes where, [`eif`] for the format, [`pcr`]
//! for the measurements and [`sign`] for PCR8.

pub mod bridge;
pub mod cpio;
pub mod eif;
pub mod layout;
pub mod pcr;
pub mod sign;

use sha2::{Digest, Sha256};

/// Everything an image is made from.
#[derive(Debug)]
pub struct PackInput {
    /// The kernel (bzImage).
    pub kernel: Vec<u8>,
    /// Its command line.
    pub cmdline: String,
    /// The ramdisks' contents.
    pub contents: layout::Contents,
    /// Which init the layout is for.
    pub layout: layout::Layout,
    /// `SOURCE_DATE_EPOCH`: every time in the archives and the metadata's build time.
    pub source_date_epoch: u32,
    /// Sign the image (PCR8).
    pub signer: Option<sign::Signer>,
    /// Memory (MiB) and vCPUs nitro-cli uses when not told otherwise.
    pub default_mem_mib: u64,
    /// See `default_mem_mib`.
    pub default_cpus: u64,
}

/// A packed image.
#[derive(Debug, Clone)]
pub struct Packed {
    /// The EIF file.
    pub eif: Vec<u8>,
    /// Its measurements.
    pub pcrs: pcr::Pcrs,
}

/// Errors packing an image.
#[derive(Debug, thiserror::Error)]
pub enum PackError {
    /// The ramdisks could not be laid out.
    #[error(transparent)]
    Layout(#[from] layout::LayoutError),
    /// The image could not be written.
    #[error("{0}")]
    Eif(String),
}

/// Packs an image: the ramdisks, the metadata, the EIF, its PCRs (and signature).
pub fn pack(input: &PackInput) -> Result<Packed, PackError> {
    let (bootstrap, app) = layout::ramdisks(&input.contents, input.layout, input.source_date_epoch)?;
    let image = eif::Image {
        kernel: input.kernel.clone(),
        cmdline: input.cmdline.clone(),
        metadata: metadata(input),
        ramdisks: vec![bootstrap, app],
        default_mem: input.default_mem_mib << 20,
        default_cpus: input.default_cpus,
    };
    let mut pcrs = image.measure();
    let signature = input.signer.as_ref().map(|s| {
        pcrs.pcr8 = Some(s.pcr8());
        s.section(&pcrs.pcr0)
    });
    let eif = image.to_bytes(signature.as_deref()).map_err(PackError::Eif)?;
    Ok(Packed { eif, pcrs })
}

/// The metadata section, in the shape AWS's reader expects (`EifIdentityInfo`), with the
/// SHA-256 of every input under `CustomMetadata` so an image says what it was made from.
/// Deterministic: the build time is `SOURCE_DATE_EPOCH`, never the clock.
fn metadata(input: &PackInput) -> Vec<u8> {
    let sha = |b: &[u8]| hex::encode(Sha256::digest(b));
    let mut inputs = serde_json::Map::new();
    inputs.insert("kernel".into(), sha(&input.kernel).into());
    inputs.insert("init".into(), sha(&input.contents.init).into());
    inputs.insert("tandem-enclave".into(), sha(&input.contents.enclave).into());
    if let Some(nsm) = &input.contents.nsm_module {
        inputs.insert("nsm.ko".into(), sha(nsm).into());
    }
    let value = serde_json::json!({
        "ImageName": "tandem-enclave",
        "ImageVersion": env!("CARGO_PKG_VERSION"),
        "BuildMetadata": {
            "BuildTime": rfc3339(input.source_date_epoch),
            "BuildTool": "tandem-image",
            "BuildToolVersion": env!("CARGO_PKG_VERSION"),
            "OperatingSystem": "Linux",
            "KernelVersion": kernel_version(&input.kernel).unwrap_or_else(|| "unknown".into()),
        },
        "DockerInfo": serde_json::Value::Null,
        "CustomMetadata": { "sha256": inputs },
    });
    serde_json::to_vec(&value).unwrap_or_default()
}

/// The version string a bzImage carries (boot protocol: the offset at 0x20E, from 0x200).
pub fn kernel_version(kernel: &[u8]) -> Option<String> {
    if kernel.get(0x202..0x206)? != b"HdrS" {
        return None;
    }
    let offset = u16::from_le_bytes([*kernel.get(0x20e)?, *kernel.get(0x20f)?]) as usize + 0x200;
    let rest = kernel.get(offset..)?;
    let end = rest.iter().take(256).position(|&b| b == 0)?;
    let text = std::str::from_utf8(&rest[..end]).ok()?;
    Some(text.split_whitespace().next()?.to_string())
}

/// `YYYY-MM-DDTHH:MM:SS+00:00` for a Unix time (days to civil date: H. Hinnant's algorithm).
pub fn rfc3339(unix: u32) -> String {
    let secs = i64::from(unix);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}+00:00",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_times_are_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00+00:00");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20+00:00");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00+00:00");
    }

    #[test]
    fn reads_a_bzimage_version() {
        let mut k = vec![0u8; 0x400];
        k[0x202..0x206].copy_from_slice(b"HdrS");
        k[0x20e..0x210].copy_from_slice(&0x100u16.to_le_bytes());
        k[0x300..0x310].copy_from_slice(b"6.1.0-57-amd64 (");
        assert_eq!(kernel_version(&k).as_deref(), Some("6.1.0-57-amd64"));
        assert_eq!(kernel_version(b"not a kernel"), None);
    }
}
