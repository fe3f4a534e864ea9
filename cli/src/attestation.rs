//! `tandem attestation verify|fetch|pin|unpin`.
//!
//! Which enclave images the wallet accepts is the user's decision, taken from the build's
//! published measurements (`enclave-pcr.json`), never from what a server presents:
//! `pin --pcr-file` adds an image from such a file; `fetch --save-pcrs FILE` pins FILE's
//! image once the live enclave proved to run it; only the explicitly dangerous
//! `fetch --danger-pin-served-image` takes an image from the server (trust on first use),
//! and says what it pinned.

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use serde_json::{Value, json};
use tandem_core::attestation::SignedDocument;
use tandem_sdk::attestation::{AttestationPolicy, ImageMeasurements};

use crate::conn::{Conn, WalletConfig, read_pcr_file, stored};
use tandem_cli::output::{Out, Reported};

/// `tandem attestation …`
#[derive(Subcommand, Debug)]
pub(crate) enum AttestationCmd {
    /// Verify an attestation document file offline: prints its fields and `valid`, or the
    /// reason it is invalid (with a non-zero exit status).
    Verify(Box<VerifyArgs>),
    /// Fetch a live enclave's document with a fresh nonce and verify it with the wallet's
    /// policy (accepted images, --mock-root).
    Fetch {
        /// Verify the live enclave against this measurements file (the build's
        /// enclave-pcr.json, obtained out of band) and, if it matches, add that image to the
        /// wallet's accepted images.
        #[arg(long, value_name = "FILE", conflicts_with = "danger_pin_served_image")]
        save_pcrs: Option<PathBuf>,
        /// DANGER: accept whatever image the server presents now and pin it (trust on first
        /// use: a host that runs its own enclave image gets it pinned). Prints what it pinned;
        /// compare it with your build's enclave-pcr.json.
        #[arg(long)]
        danger_pin_served_image: bool,
    },
    /// Add an enclave image to the wallet's accepted images, from the build's
    /// measurements file (enclave-pcr.json: PCR0, PCR1 and PCR2, or PCR8).
    Pin {
        /// The measurements file.
        #[arg(long, value_name = "FILE")]
        pcr_file: PathBuf,
    },
    /// Remove accepted images from the wallet: the one in FILE, or all of them.
    Unpin {
        /// The measurements file of the image to remove.
        #[arg(long, value_name = "FILE", required_unless_present = "all")]
        pcr_file: Option<PathBuf>,
        /// Remove every accepted image.
        #[arg(long)]
        all: bool,
    },
    /// List the wallet's accepted images.
    Pins,
}

/// `tandem attestation verify` options.
#[derive(Args, Debug)]
pub(crate) struct VerifyArgs {
    /// The COSE_Sign1 document (raw bytes).
    #[arg(long)]
    doc: PathBuf,
    /// Trust this root (PEM) instead of the pinned AWS Nitro root G1.
    #[arg(long)]
    root: Option<PathBuf>,
    /// The verifier's clock, Unix seconds (default: now). Real documents are only fresh
    /// for minutes; pass a time just after their timestamp to verify old ones.
    #[arg(long)]
    at: Option<u64>,
    /// The expected image's measurements file (enclave-pcr.json). Without it and without
    /// --pcrN, every check but the image's is made (the output says `imageChecked: false`).
    #[arg(long, value_name = "FILE")]
    pcr_file: Option<PathBuf>,
    /// Expected PCR0 (hex).
    #[arg(long)]
    pcr0: Option<String>,
    /// Expected PCR1 (hex).
    #[arg(long)]
    pcr1: Option<String>,
    /// Expected PCR2 (hex).
    #[arg(long)]
    pcr2: Option<String>,
    /// Expected PCR8 (hex).
    #[arg(long)]
    pcr8: Option<String>,
    /// Accept a debug-mode enclave (PCR0-2 all zero).
    #[arg(long)]
    allow_debug: bool,
}

fn fields(doc: &tandem_core::attestation::AttestationDocument) -> Value {
    let pcrs: serde_json::Map<String, Value> = doc
        .pcrs
        .iter()
        .filter(|(_, v)| v.iter().any(|b| *b != 0) || doc.pcrs.len() <= 16)
        .map(|(k, v)| (format!("pcr{k}"), Value::String(hex::encode(v))))
        .collect();
    json!({
        "moduleId": doc.module_id,
        "timestamp": doc.timestamp_ms / 1000,
        "digest": doc.digest,
        "pcrs": pcrs,
        "publicKey": doc.public_key.as_ref().map(hex::encode),
        "userData": doc.user_data.as_ref().map(hex::encode),
        "nonce": doc.nonce.as_ref().map(hex::encode),
        "cabundleLength": doc.cabundle.len(),
    })
}

/// Runs `tandem attestation …`.
pub(crate) async fn run(cmd: AttestationCmd, conn: &Conn, out: Out) -> Result<()> {
    match cmd {
        AttestationCmd::Verify(a) => verify(*a, out),
        AttestationCmd::Fetch {
            save_pcrs,
            danger_pin_served_image,
        } => fetch(conn, out, save_pcrs, danger_pin_served_image).await,
        AttestationCmd::Pin { pcr_file } => {
            let image = read_pcr_file(&pcr_file)?;
            let mut config = WalletConfig::load(&conn.wallet)?;
            let added = config.add(&image);
            config.save(&conn.wallet)?;
            out.result(
                &json!({"pinned": stored(&image), "new": added, "acceptedImages": config.accepted_images.len()}),
            );
            Ok(())
        }
        AttestationCmd::Unpin { pcr_file, all } => {
            let mut config = WalletConfig::load(&conn.wallet)?;
            let before = config.accepted_images.len();
            if all {
                config.accepted_images.clear();
            } else if let Some(path) = pcr_file {
                let image = stored(&read_pcr_file(&path)?);
                config.accepted_images.retain(|i| *i != image);
            }
            config.save(&conn.wallet)?;
            out.result(&json!({"removed": before - config.accepted_images.len(), "acceptedImages": config.accepted_images.len()}));
            Ok(())
        }
        AttestationCmd::Pins => {
            let config = WalletConfig::load(&conn.wallet)?;
            out.result(&json!({"acceptedImages": config.accepted_images}));
            Ok(())
        }
    }
}

async fn fetch(conn: &Conn, out: Out, save_pcrs: Option<PathBuf>, danger_pin: bool) -> Result<()> {
    let mut config = WalletConfig::load(&conn.wallet)?;
    let (policy, to_pin) = if let Some(path) = &save_pcrs {
        // Out of band: the live enclave must run exactly the image of FILE.
        let image = read_pcr_file(path)?;
        (conn.base_policy(&config)?.accept_image(image.clone()), Some(image))
    } else if danger_pin {
        (conn.base_policy(&config)?.danger_accept_any_image(), None)
    } else {
        (conn.policy_for(&config)?, None)
    };
    let verified = conn
        .client_with(policy)?
        .attest()
        .await
        .context("the enclave's attestation was refused")?;
    let mut v = fields(&verified.document);
    v["valid"] = json!(true);
    v["mock"] = json!(verified.mock);
    let to_pin = match to_pin {
        Some(image) => Some(image),
        None if danger_pin => {
            let pcrs = verified
                .document
                .pcrs
                .iter()
                .filter(|(i, _)| [0u8, 1, 2].contains(i))
                .map(|(i, v)| (*i, v.clone()))
                .collect();
            let image = ImageMeasurements::new(pcrs).context("the served document has no image measurements to pin")?;
            eprintln!(
                "DANGER: pinned the image this server presents now, without comparing it with your build:\n{}\ncompare it with the enclave-pcr.json of the build you trust",
                serde_json::to_string_pretty(&stored(&image))?
            );
            Some(image)
        }
        None => None,
    };
    if let Some(image) = to_pin {
        config.add(&image);
        config.save(&conn.wallet)?;
        v["pinned"] = json!(stored(&image));
    }
    out.result(&v);
    Ok(())
}

fn verify(a: VerifyArgs, out: Out) -> Result<()> {
    let bytes = std::fs::read(&a.doc).with_context(|| format!("cannot read {}", a.doc.display()))?;
    let mut policy = AttestationPolicy::nitro().danger_allow_debug(a.allow_debug);
    if let Some(root) = &a.root {
        policy = policy.with_root_pem(
            &std::fs::read_to_string(root).with_context(|| format!("cannot read {}", root.display()))?,
        )?;
    }
    let mut pcrs = std::collections::BTreeMap::new();
    for (i, v) in [(0u8, &a.pcr0), (1, &a.pcr1), (2, &a.pcr2), (8, &a.pcr8)] {
        if let Some(hex_value) = v {
            pcrs.insert(
                i,
                hex::decode(hex_value).with_context(|| format!("--pcr{i} is not hex"))?,
            );
        }
    }
    let image_checked = !pcrs.is_empty() || a.pcr_file.is_some();
    if let Some(file) = &a.pcr_file {
        policy = policy.accept_image(read_pcr_file(file)?);
    }
    if !pcrs.is_empty() {
        policy = policy.accept_image(ImageMeasurements::new(pcrs).context("the --pcrN options do not name an image")?);
    } else if a.pcr_file.is_none() {
        // Offline inspection of a document without an expectation: check everything but
        // the image, and say so.
        policy = policy.danger_accept_any_image();
    }
    let now = a.at.unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    });
    let parsed = SignedDocument::parse(&bytes).ok();
    match policy.verify(&bytes, now, None) {
        Ok(verified) => {
            let mut v = fields(&verified.document);
            v["valid"] = json!(true);
            v["imageChecked"] = json!(image_checked);
            out.result(&v);
            Ok(())
        }
        Err(e) => {
            let mut v = parsed.map(|p| fields(&p.document)).unwrap_or_else(|| json!({}));
            v["valid"] = json!(false);
            v["reason"] = json!(e.to_string());
            out.result(&v);
            if !out.json {
                eprintln!("error: invalid attestation document: {e}");
            }
            Err(anyhow::Error::new(Reported))
        }
    }
}
