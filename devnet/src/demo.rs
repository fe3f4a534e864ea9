//! `tandem-dev demo`: the whole system on this machine, step by step, with timings.

use std::time::Instant;

use alloy_consensus::TxEnvelope;
use alloy_consensus::transaction::SignerRecoverable;
use alloy_eips::eip2718::Decodable2718;
use alloy_primitives::{U256, address};
use alloy_signer::Signer;
use anyhow::{Context, Result, bail, ensure};
use clap::Args;
use serde_json::json;
use tandem_sdk::TandemSigner;
use tandem_sdk::eth::{self, TxKindParams, TxParams};

use crate::local::LocalEnclave;
use tandem_cli::output::Out;

/// `tandem-dev demo` options.
#[derive(Args, Debug)]
pub(crate) struct DemoArgs {
    /// The message to sign (EIP-191).
    #[arg(long, default_value = "Hello from Tandem")]
    message: String,
}

/// Runs the demo.
pub(crate) async fn run(args: DemoArgs, out: Out) -> Result<()> {
    let t0 = Instant::now();
    let step = |n: u8, text: &str, since: Instant| {
        out.progress(&format!("[{n}/6] {text}  ({} ms)", since.elapsed().as_millis()));
    };
    out.progress("Tandem demo: a 2-of-2 threshold ECDSA wallet, on this machine in mock mode");
    out.progress("(mock mode = no Nitro hardware; the cryptography is the real one)\n");

    let t = Instant::now();
    let enclave = LocalEnclave::start().await?;
    let client = enclave.client()?;
    let health = client.health().await.context("the enclave does not answer")?;
    ensure!(health.mock_mode, "expected a mock-mode enclave");
    step(
        1,
        &format!("enclave started on {} (mockMode = {})", enclave.url, health.mock_mode),
        t,
    );

    let t = Instant::now();
    let account = client
        .create_account_with_progress(Some("demo"), |n, what| {
            out.progress(&format!("      dkg {n}/4: {what}"))
        })
        .await
        .context("distributed key generation failed")?;
    step(
        2,
        &format!("account created by DKG: {} (id {})", account.address(), account.id()),
        t,
    );
    out.progress("      the device holds one share, the enclave the other; neither has the key");

    let signer = TandemSigner::new(client.clone(), account.clone()).with_chain_id(Some(1));

    let t = Instant::now();
    let sig = signer
        .sign_message(args.message.as_bytes())
        .await
        .context("signing the message failed")?;
    let recovered = sig
        .recover_address_from_msg(args.message.as_bytes())
        .context("recovery failed")?;
    ensure!(
        recovered == account.address(),
        "message signature recovers {recovered}, not the account"
    );
    step(
        3,
        &format!("signed message {:?}; ecrecover gives {recovered} ✓", args.message),
        t,
    );

    let t = Instant::now();
    let params = TxParams {
        chain_id: 1,
        nonce: 0,
        to: Some(address!("0x3535353535353535353535353535353535353535")),
        value: U256::from(10u64).pow(U256::from(15u64)),
        gas_limit: 21_000,
        kind: TxKindParams::Eip1559 {
            max_fee_per_gas: 30_000_000_000,
            max_priority_fee_per_gas: 1_000_000_000,
            access_list: Default::default(),
        },
        data: Default::default(),
    };
    let tx = eth::build_tx(&params);
    let tx_sig = signer
        .sign_hash(&eth::signing_hash(&tx))
        .await
        .context("signing the transaction failed")?;
    let raw = eth::encode_signed(tx, tx_sig);
    let decoded = TxEnvelope::decode_2718(&mut raw.as_slice()).context("the signed transaction does not decode")?;
    let sender = decoded
        .recover_signer()
        .context("cannot recover the transaction's sender")?;
    ensure!(
        sender == account.address(),
        "transaction recovers {sender}, not the account"
    );
    step(
        4,
        &format!(
            "signed an EIP-1559 transfer of 0.001 ETH ({} bytes raw); sender recovers ✓",
            raw.len()
        ),
        t,
    );

    let t = Instant::now();
    client.recover(&account).await.context("recovery check failed")?;
    step(
        5,
        "recovery check: the enclave confirms the device share matches the account ✓",
        t,
    );

    let t = Instant::now();
    let half_n = U256::from_be_slice(&hex::decode(
        "7fffffffffffffffffffffffffffffff5d576e7357a4501ddfe92f46681b20a0",
    )?);
    if sig.s() > half_n || tx_sig.s() > half_n {
        bail!("a signature is not low-S");
    }
    step(6, "both signatures are low-S (s ≤ n/2), as Ethereum requires", t);

    out.progress(&format!("\ndone in {:.2} s", t0.elapsed().as_secs_f64()));
    out.result(&json!({
        "enclave": enclave.url,
        "accountId": account.id().to_string(),
        "address": account.address().to_string(),
        "messageSignature": format!("0x{}", hex::encode(sig.as_bytes())),
        "rawTransaction": format!("0x{}", hex::encode(&raw)),
        "verified": true,
        "seconds": (t0.elapsed().as_secs_f64() * 100.0).round() / 100.0,
    }));
    Ok(())
}
