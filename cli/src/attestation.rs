//! `tandem attestation verify|fetch`.

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use serde_json::{Value, json};
use tandem_core::attestation::SignedDocument;
use tandem_sdk::attestation::AttestationPolicy;

use crate::conn::{Conn, WalletConfig};
use crate::output::{Out, Reported};

/// `tandem attestation …`
#[derive(Subcommand, Debug)]
pub(crate) enum AttestationCmd {
    /// Verify an attestation document file offline: prints its fields and `valid`, or the
    /// reason it is invalid (with a non-zero exit status).
    Verify(Box<VerifyArgs>),
    /// Fetch a live enclave's document with a fresh nonce and verify it with the wallet's
    /// policy (pinned PCRs, --mock-root).
    Fetch {
        /// Write the document's PCR0, PCR1, PCR2 and PCR8 into the wallet's config.json as
        /// the expected values (trust on first use: check them against your build first).
        #[arg(long)]
        save_pcrs: bool,
    },
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
    /// Expected PCR0 (hex).
    #[arg(long)]
    pcr0: Option<String>,
    /// Expected PCR1 (hex).
    #[arg(long)]
    pcr1: Option<String>,
    /// Expected PCR2 (hex).
    #[arg(long)]
    pcr2: Option<String>,
    /// Expected PCR3 (hex).
    #[arg(long)]
    pcr3: Option<String>,
    /// Expected PCR4 (hex).
    #[arg(long)]
    pcr4: Option<String>,
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
        AttestationCmd::Fetch { save_pcrs } => {
            let client = conn.client()?;
            let verified = client.attest().await.context("the enclave's attestation was refused")?;
            let mut v = fields(&verified.document);
            v["valid"] = json!(true);
            v["mock"] = json!(verified.mock);
            if save_pcrs {
                let mut config = WalletConfig::load(&conn.wallet)?;
                for i in [0u8, 1, 2, 8] {
                    if let Some(pcr) = verified.document.pcrs.get(&i) {
                        config.expected_pcrs.insert(i, hex::encode(pcr));
                    }
                }
                config.save(&conn.wallet)?;
                v["savedPcrs"] = json!([0, 1, 2, 8]);
            }
            out.result(&v);
            Ok(())
        }
    }
}

fn verify(a: VerifyArgs, out: Out) -> Result<()> {
    let bytes = std::fs::read(&a.doc).with_context(|| format!("cannot read {}", a.doc.display()))?;
    let mut policy = AttestationPolicy::nitro().danger_allow_debug(a.allow_debug);
    if let Some(root) = &a.root {
        policy = policy.with_root_pem(
            &std::fs::read_to_string(root).with_context(|| format!("cannot read {}", root.display()))?,
        )?;
    }
    for (i, v) in [
        (0u8, &a.pcr0),
        (1, &a.pcr1),
        (2, &a.pcr2),
        (3, &a.pcr3),
        (4, &a.pcr4),
        (8, &a.pcr8),
    ] {
        if let Some(hex_value) = v {
            policy = policy.expect_pcr(
                i,
                hex::decode(hex_value).with_context(|| format!("--pcr{i} is not hex"))?,
            );
        }
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
