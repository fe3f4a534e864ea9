//! `tandem sign …`: a hash, a message, typed data or a transaction.

use std::path::PathBuf;
use std::time::Instant;

use alloy_primitives::{Address, B256, Bytes, U256};
use alloy_signer::Signer;
use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use serde_json::json;
use tandem_sdk::TandemSigner;
use tandem_sdk::eth::{self, TxKindParams, TxParams};

use crate::conn::Conn;
use crate::wallet::Wallet;
use tandem_cli::output::Out;

/// Which account to sign with.
#[derive(Args, Debug)]
pub(crate) struct Which {
    /// Account id, address or label (optional when the wallet has one account).
    #[arg(long)]
    account: Option<String>,
}

/// `tandem sign …`
#[derive(Subcommand, Debug)]
pub(crate) enum SignCmd {
    /// Sign a raw 32-byte hash (0x-prefixed hex). Dangerous for untrusted hashes: a hash
    /// can be a transaction. Prefer `sign message` or `sign tx`.
    Hash {
        #[command(flatten)]
        which: Which,
        /// The 32-byte hash, 0x-prefixed hex.
        hash: String,
    },
    /// Sign a message the EIP-191 way (`personal_sign`).
    Message {
        #[command(flatten)]
        which: Which,
        /// The message (UTF-8 text, or hex with --hex).
        message: String,
        /// Treat MESSAGE as 0x-prefixed hex bytes.
        #[arg(long)]
        hex: bool,
    },
    /// Sign EIP-712 typed data: a JSON file as `eth_signTypedData_v4` takes it.
    TypedData {
        #[command(flatten)]
        which: Which,
        /// The typed-data JSON file (`-` for stdin).
        file: PathBuf,
    },
    /// Sign a transaction (EIP-1559 by default, `--legacy` for EIP-155 legacy, or
    /// `--access-list-type` for EIP-2930) and print the raw bytes for eth_sendRawTransaction.
    Tx(TxArgs),
}

/// Transaction fields.
#[derive(Args, Debug)]
pub(crate) struct TxArgs {
    #[command(flatten)]
    which: Which,
    /// Chain id (1 mainnet, 11155111 Sepolia, 31337 anvil).
    #[arg(long)]
    chain_id: u64,
    /// The sender's nonce.
    #[arg(long)]
    nonce: u64,
    /// Recipient address; omit to deploy a contract from --data.
    #[arg(long)]
    to: Option<String>,
    /// Value in wei.
    #[arg(long, default_value = "0")]
    value: String,
    /// Gas limit.
    #[arg(long, default_value_t = 21_000)]
    gas_limit: u64,
    /// EIP-1559: max fee per gas, wei.
    #[arg(long, conflicts_with = "gas_price")]
    max_fee: Option<u128>,
    /// EIP-1559: max priority fee (tip) per gas, wei.
    #[arg(long, conflicts_with = "gas_price")]
    max_priority_fee: Option<u128>,
    /// Legacy / EIP-2930: gas price, wei.
    #[arg(long)]
    gas_price: Option<u128>,
    /// Build a legacy (type 0, EIP-155) transaction; needs --gas-price.
    #[arg(long, conflicts_with = "access_list_type")]
    legacy: bool,
    /// Build an EIP-2930 (type 1) transaction with an empty access list; needs --gas-price.
    #[arg(long)]
    access_list_type: bool,
    /// Call data, 0x-prefixed hex.
    #[arg(long, default_value = "0x")]
    data: String,
}

fn parse_hex(what: &str, s: &str) -> Result<Vec<u8>> {
    let digits = s
        .strip_prefix("0x")
        .with_context(|| format!("{what} must be 0x-prefixed hex"))?;
    hex::decode(digits).with_context(|| format!("{what} is not valid hex"))
}

fn parse_address(s: &str) -> Result<Address> {
    tandem_core::Address::parse(s).with_context(|| format!("--to {s:?} is not an address"))?;
    s.parse().with_context(|| format!("--to {s:?} is not an address"))
}

/// Runs `tandem sign …`. Whatever the outcome, the account file is saved again
/// afterwards: a flow can teach the device a newer generation of the enclave's record, or
/// that the enclave failed an OT consistency check (then this share is locked).
pub(crate) async fn run(cmd: SignCmd, conn: &Conn, out: Out) -> Result<()> {
    let wallet = Wallet::open(&conn.wallet)?;
    let selector = match &cmd {
        SignCmd::Hash { which, .. } | SignCmd::Message { which, .. } | SignCmd::TypedData { which, .. } => {
            which.account.clone()
        }
        SignCmd::Tx(args) => args.which.account.clone(),
    };
    let account = wallet.find(selector.as_deref())?;
    let client = conn.client()?;
    let result = sign_with(cmd, TandemSigner::new(client, account.clone()), out).await;
    wallet
        .save(&account)
        .context("cannot record what the flow learnt in the wallet")?;
    if account.enclave_misbehaved().is_some() {
        return result.context(
            "this account's share is locked on this device: the enclave failed an OT consistency check, so it gets no second attempt with this share; run `tandem account refresh --complete` (a new OT setup) before signing again",
        );
    }
    result
}

async fn sign_with(cmd: SignCmd, signer: TandemSigner, out: Out) -> Result<()> {
    let started = Instant::now();
    match cmd {
        SignCmd::Hash { hash, .. } => {
            let bytes = parse_hex("the hash", &hash)?;
            let digest = B256::try_from(bytes.as_slice())
                .map_err(|_| anyhow::anyhow!("the hash must be 32 bytes, got {}", bytes.len()))?;
            let sig = signer.sign_hash(&digest).await?;
            print_sig(out, &signer, digest, &sig, started, json!({}));
        }
        SignCmd::Message { message, hex, .. } => {
            let bytes = if hex {
                parse_hex("the message", &message)?
            } else {
                message.into_bytes()
            };
            let sig = signer.sign_message(&bytes).await?;
            print_sig(out, &signer, eth::eip191_hash(&bytes), &sig, started, json!({}));
        }
        SignCmd::TypedData { file, .. } => {
            let json_text = if file.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin()).context("cannot read stdin")?
            } else {
                std::fs::read_to_string(&file).with_context(|| format!("cannot read {}", file.display()))?
            };
            let digest = eth::typed_data_hash(&json_text)?;
            let sig = signer.sign_typed_data_json(&json_text).await?;
            print_sig(out, &signer, digest, &sig, started, json!({}));
        }
        SignCmd::Tx(args) => {
            let params = tx_params(&args)?;
            let signer = signer.with_chain_id(Some(params.chain_id));
            let tx = eth::build_tx(&params);
            let digest = eth::signing_hash(&tx);
            let sig = signer.sign_hash(&digest).await?;
            let raw = eth::encode_signed(tx, sig);
            let tx_hash = alloy_primitives::keccak256(&raw);
            print_sig(
                out,
                &signer,
                digest,
                &sig,
                started,
                json!({"raw": format!("0x{}", hex::encode(&raw)), "txHash": tx_hash.to_string()}),
            );
        }
    }
    Ok(())
}

fn tx_params(a: &TxArgs) -> Result<TxParams> {
    let kind = if a.legacy || a.access_list_type {
        let gas_price = a
            .gas_price
            .context("--legacy and --access-list-type need --gas-price")?;
        if a.legacy {
            TxKindParams::Legacy { gas_price }
        } else {
            TxKindParams::Eip2930 {
                gas_price,
                access_list: Default::default(),
            }
        }
    } else {
        if a.gas_price.is_some() {
            bail!("--gas-price is for --legacy or --access-list-type; EIP-1559 takes --max-fee and --max-priority-fee");
        }
        let max_fee = a
            .max_fee
            .context("EIP-1559 needs --max-fee (or pass --legacy --gas-price)")?;
        let tip = a.max_priority_fee.context("EIP-1559 needs --max-priority-fee")?;
        if tip > max_fee {
            bail!("--max-priority-fee ({tip}) cannot exceed --max-fee ({max_fee})");
        }
        TxKindParams::Eip1559 {
            max_fee_per_gas: max_fee,
            max_priority_fee_per_gas: tip,
            access_list: Default::default(),
        }
    };
    let to = a.to.as_deref().map(parse_address).transpose()?;
    let data = Bytes::from(parse_hex("--data", &a.data)?);
    if to.is_none() && data.is_empty() {
        bail!("without --to this deploys a contract, which needs --data");
    }
    let value = U256::from_str_radix(
        a.value.trim_start_matches("0x"),
        if a.value.starts_with("0x") { 16 } else { 10 },
    )
    .with_context(|| format!("--value {:?} is not a number of wei", a.value))?;
    Ok(TxParams {
        chain_id: a.chain_id,
        nonce: a.nonce,
        to,
        value,
        gas_limit: a.gas_limit,
        kind,
        data,
    })
}

fn print_sig(
    out: Out,
    signer: &TandemSigner,
    digest: B256,
    sig: &alloy_primitives::Signature,
    started: Instant,
    extra: serde_json::Value,
) {
    let mut v = json!({
        "account": signer.account().id().to_string(),
        "address": signer.address().to_string(),
        "digest": digest.to_string(),
        "signature": format!("0x{}", hex::encode(sig.as_bytes())),
        "r": format!("{:#066x}", sig.r()),
        "s": format!("{:#066x}", sig.s()),
        "v": 27 + u8::from(sig.v()),
        "verified": true,
        "ms": started.elapsed().as_millis() as u64,
    });
    if let (Some(obj), serde_json::Value::Object(more)) = (v.as_object_mut(), extra) {
        obj.extend(more);
    }
    out.result(&v);
}
