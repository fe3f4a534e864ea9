//! `tandem-image`: packs, describes and unpacks enclave images. See the library docs.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tandem_image::layout::{Contents, Layout, PRODUCTION_ARGS};
use tandem_image::{PackInput, bridge, cpio, eif, pack, sign};

/// Packs the Tandem enclave into a reproducible EIF without Docker, and reads EIFs back.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Pack an image: writes OUT/enclave.eif and OUT/enclave-pcr.json.
    Pack(Box<PackArgs>),
    /// Print an EIF's header, sections and measurements (checked) as JSON.
    Describe {
        /// The EIF.
        eif: PathBuf,
    },
    /// Write an EIF's kernel, cmdline and ramdisks (and all ramdisks as one initrd) to DIR.
    Extract {
        /// The EIF.
        eif: PathBuf,
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
    },
    /// Pack a host directory into a reproducible cpio archive (a test-only ramdisk).
    Cpio {
        /// The directory whose contents become the archive's root.
        #[arg(long)]
        root: PathBuf,
        /// The archive.
        #[arg(long)]
        out: PathBuf,
        /// Every time in the archive [default: $SOURCE_DATE_EPOCH or 0].
        #[arg(long, env = "SOURCE_DATE_EPOCH", default_value_t = 0)]
        source_date_epoch: u32,
    },
    /// Print the PCRs an attestation document (COSE_Sign1, raw or base64) reports, in the
    /// shape of enclave-pcr.json (PCR0, PCR1, PCR2, PCR8 when not zero). The signature is
    /// not checked: this compares measurements, the SDK verifies documents.
    AttestationPcrs {
        /// The document.
        document: PathBuf,
    },
    /// Relay between the host and a guest's vhost-device-vsock (tests; see `bridge`).
    VsockBridge {
        /// vhost-device-vsock's host-side socket (`--uds-path`).
        #[arg(long)]
        uds: PathBuf,
        /// `to-guest:ADDR=PORT`, `to-host:PORT=ADDR` or `heartbeat:PORT`. Repeatable.
        #[arg(long = "forward", required = true)]
        forwards: Vec<bridge::Forward>,
    },
}

#[derive(clap::Args, Debug)]
struct PackArgs {
    /// The kernel: nitro-cli's bzImage on a parent (/usr/share/nitro_enclaves/blobs), any
    /// bzImage in tests.
    #[arg(long)]
    kernel: PathBuf,
    /// The kernel command line.
    #[arg(long, conflicts_with = "cmdline_file", required_unless_present = "cmdline_file")]
    cmdline: Option<String>,
    /// A file holding the kernel command line (nitro-cli's `cmdline` blob).
    #[arg(long)]
    cmdline_file: Option<PathBuf>,
    /// The init: ours (image/init, `tandem-init`) or nitro-cli's `init` blob with
    /// `--layout nitro-cli`.
    #[arg(long)]
    init: PathBuf,
    /// The NSM driver module (nitro-cli's `nsm.ko`), loaded by the init before anything else.
    #[arg(long)]
    nsm_module: Option<PathBuf>,
    /// Another kernel module for the init to load before the NSM driver (kernels that build
    /// vsock or virtio-mmio as modules; not nitro-cli's). Repeatable, loaded in order.
    #[arg(long = "module", value_name = "FILE.ko")]
    modules: Vec<PathBuf>,
    /// The static enclave binary.
    #[arg(long)]
    enclave: PathBuf,
    /// The KMS key that wraps the data key (part of the image, so of PCR2).
    #[arg(long, env = "KMS_KEY_ID")]
    kms_key_id: Option<String>,
    /// The KMS key's region.
    #[arg(long, env = "KMS_REGION", default_value = "us-east-1")]
    kms_region: String,
    /// Which init the ramdisks are laid out for.
    #[arg(long, value_enum, default_value_t = Layout::Tandem)]
    layout: Layout,
    /// Sign the image with this certificate (PCR8); needs --private-key.
    #[arg(long, requires = "private_key")]
    signing_cert: Option<PathBuf>,
    /// The P-384 private key (PEM) for --signing-cert.
    #[arg(long, requires = "signing_cert")]
    private_key: Option<PathBuf>,
    /// Every time in the archives and the build time in the metadata.
    #[arg(long, env = "SOURCE_DATE_EPOCH", default_value_t = 0)]
    source_date_epoch: u32,
    /// Default enclave memory recorded in the header, MiB.
    #[arg(long, default_value_t = 1024)]
    mem_mib: u64,
    /// Default vCPUs recorded in the header.
    #[arg(long, default_value_t = 2)]
    cpus: u64,
    /// Output directory.
    #[arg(long, default_value = "eif")]
    out: PathBuf,
}

fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), String> {
    std::fs::write(path, bytes).map_err(|e| format!("{}: {e}", path.display()))
}

fn run_pack(a: &PackArgs) -> Result<(), String> {
    let cmdline = match (&a.cmdline, &a.cmdline_file) {
        (Some(c), _) => c.clone(),
        (None, Some(f)) => String::from_utf8(read(f)?).map_err(|e| format!("{}: {e}", f.display()))?,
        (None, None) => return Err("--cmdline or --cmdline-file".into()),
    };
    let mut env = vec![format!("TANDEM_KMS_REGION={}", a.kms_region)];
    if let Some(key) = a.kms_key_id.as_deref().filter(|k| !k.is_empty()) {
        env.insert(0, format!("TANDEM_KMS_KEY_ID={key}"));
    }
    let signer = match (&a.signing_cert, &a.private_key) {
        (Some(cert), Some(key)) => {
            let key = String::from_utf8(read(key)?).map_err(|_| "the private key is not PEM text".to_string())?;
            Some(sign::Signer::from_pem(&key, &read(cert)?).map_err(|e| e.to_string())?)
        }
        _ => None,
    };
    let input = PackInput {
        kernel: read(&a.kernel)?,
        cmdline: cmdline.trim_end_matches(['\n', '\r']).to_string(),
        contents: Contents {
            init: read(&a.init)?,
            nsm_module: a.nsm_module.as_deref().map(read).transpose()?,
            modules: a
                .modules
                .iter()
                .map(|m| {
                    let name = m
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    read(m).map(|bytes| (name, bytes))
                })
                .collect::<Result<_, _>>()?,
            enclave: read(&a.enclave)?,
            args: PRODUCTION_ARGS.iter().map(|s| s.to_string()).collect(),
            env,
        },
        layout: a.layout,
        source_date_epoch: a.source_date_epoch,
        signer,
        default_mem_mib: a.mem_mib,
        default_cpus: a.cpus,
    };
    let packed = pack(&input).map_err(|e| e.to_string())?;
    std::fs::create_dir_all(&a.out).map_err(|e| format!("{}: {e}", a.out.display()))?;
    write(&a.out.join("enclave.eif"), &packed.eif)?;
    let json = packed.pcrs.to_json();
    write(&a.out.join("enclave-pcr.json"), json.as_bytes())?;
    print!("{json}");
    eprintln!(
        "wrote {} ({} bytes) and {}",
        a.out.join("enclave.eif").display(),
        packed.eif.len(),
        a.out.join("enclave-pcr.json").display()
    );
    Ok(())
}

fn run_describe(path: &Path) -> Result<(), String> {
    let image = eif::read(&read(path)?)?;
    let mut pcrs = image.measure();
    if let Some(sig) = image.of(eif::SectionType::Signature).first() {
        pcrs.pcr8 = Some(sign::verify_section(sig, &pcrs.pcr0).map_err(|e| e.to_string())?);
    }
    let sections: Vec<_> = image
        .sections
        .iter()
        .map(|s| serde_json::json!({"type": s.kind, "offset": s.offset, "size": s.data.len()}))
        .collect();
    let metadata = image
        .of(eif::SectionType::Metadata)
        .first()
        .and_then(|m| serde_json::from_slice::<serde_json::Value>(m).ok());
    let measurements: serde_json::Value = serde_json::from_str(&pcrs.to_json()).map_err(|e| e.to_string())?;
    let out = serde_json::json!({
        "version": image.version,
        "flags": image.flags,
        "defaultMemMib": image.default_mem >> 20,
        "defaultCpus": image.default_cpus,
        "crc": "ok",
        "sections": sections,
        "measurements": measurements,
        "metadata": metadata,
    });
    println!("{}", serde_json::to_string_pretty(&out).map_err(|e| e.to_string())?);
    Ok(())
}

fn run_extract(path: &Path, out: &Path) -> Result<(), String> {
    let image = eif::read(&read(path)?)?;
    std::fs::create_dir_all(out).map_err(|e| format!("{}: {e}", out.display()))?;
    write(&out.join("kernel"), &image.of(eif::SectionType::Kernel).concat())?;
    write(&out.join("cmdline"), &image.of(eif::SectionType::Cmdline).concat())?;
    let ramdisks = image.of(eif::SectionType::Ramdisk);
    for (i, r) in ramdisks.iter().enumerate() {
        write(&out.join(format!("ramdisk-{i}.cpio")), r)?;
    }
    // The kernel unpacks concatenated archives in order, as the Nitro loader lays them out.
    write(&out.join("initrd.cpio"), &ramdisks.concat())?;
    println!("{}", out.display());
    Ok(())
}

fn run_cpio(root: &Path, out: &Path, mtime: u32) -> Result<(), String> {
    let mut a = cpio::Archive::new();
    a.add_tree(root, "").map_err(|e| e.to_string())?;
    write(out, &a.to_bytes(mtime).map_err(|e| e.to_string())?)
}

fn run_attestation_pcrs(path: &Path) -> Result<(), String> {
    use coset::{CborSerializable as _, TaggedCborSerializable as _};
    let raw = read(path)?;
    let text = String::from_utf8_lossy(&raw);
    let bytes = match base64_decode(text.trim()) {
        Some(b) if !text.trim().is_empty() => b,
        _ => raw,
    };
    let sign1 = coset::CoseSign1::from_slice(&bytes)
        .or_else(|_| coset::CoseSign1::from_tagged_slice(&bytes))
        .map_err(|e| format!("not a COSE_Sign1: {e:?}"))?;
    let payload = sign1.payload.ok_or("the document has no payload")?;
    let doc: ciborium::Value = ciborium::from_reader(payload.as_slice()).map_err(|e| e.to_string())?;
    let pcrs = doc
        .as_map()
        .and_then(|m| m.iter().find(|(k, _)| k.as_text() == Some("pcrs")))
        .and_then(|(_, v)| v.as_map())
        .ok_or("the document has no pcrs map")?;
    let mut out = serde_json::Map::new();
    for (k, v) in pcrs {
        let index = k.as_integer().and_then(|i| u8::try_from(i).ok());
        if let (Some(i @ (0 | 1 | 2 | 8)), Some(value)) = (index, v.as_bytes()) {
            if i == 8 && value.iter().all(|&b| b == 0) {
                continue;
            }
            out.insert(format!("PCR{i}"), hex::encode(value).into());
        }
    }
    println!("{}", serde_json::to_string_pretty(&out).map_err(|e| e.to_string())?);
    Ok(())
}

/// Standard base64 (padded), or `None`: documents travel base64-encoded in JSON.
fn base64_decode(s: &str) -> Option<Vec<u8>> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::with_capacity(s.len() / 4 * 3);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes().filter(|&c| c != b'=') {
        let v = ALPHABET.iter().position(|&a| a == c)? as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Pack(a) => run_pack(a),
        Command::Describe { eif } => run_describe(eif),
        Command::Extract { eif, out } => run_extract(eif, out),
        Command::Cpio {
            root,
            out,
            source_date_epoch,
        } => run_cpio(root, out, *source_date_epoch),
        Command::AttestationPcrs { document } => run_attestation_pcrs(document),
        Command::VsockBridge { uds, forwards } => bridge::run(uds, forwards).map_err(|e| e.to_string()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
