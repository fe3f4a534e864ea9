//! Cross-process tests of the device-share lifecycle: the real `tandem-enclave` binary,
//! the SDK's encrypted backups and recovery check, and refreshes interrupted by killing
//! the enclave (SIGKILL) at each point of the flow.
#![allow(clippy::unwrap_used)] // test helpers, not only #[test] fns, unwrap

mod common;

use std::sync::Mutex;
use std::time::{Duration, Instant};

use alloy_signer::Signer;
use common::Enclave;
use serde_json::Value;
use tandem_core::ErrorCode;
use tandem_sdk::backup::{self, BackupContents, BackupError, DecryptOptions, Passphrase};
use tandem_sdk::{Account, Client, SdkError, TandemSigner};

const PASSPHRASE: &str = "correct horse battery staple";

fn server_code(err: &SdkError) -> Option<ErrorCode> {
    match err {
        SdkError::Server { code, .. } => Some(*code),
        _ => None,
    }
}

/// Signs `text` (EIP-191) and checks the signature with alloy's recovery, not the SDK's.
async fn signs(client: &Client, account: &Account, text: &str) -> Result<(), String> {
    let sig = TandemSigner::new(client.clone(), account.clone())
        .sign_message(text.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    assert_eq!(sig.recover_address_from_msg(text).unwrap(), account.address());
    Ok(())
}

/// Encrypts off the runtime's workers, at the default Argon2id parameters.
async fn encrypt(contents: BackupContents) -> (Vec<u8>, Duration) {
    tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let file = backup::encrypt(&contents, &Passphrase::new(PASSPHRASE.into())).unwrap();
        (file, started.elapsed())
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_wipe_restore_recover_sign_across_an_enclave_restart() {
    let root = tempfile::tempdir().unwrap();
    let enclave = Enclave::start(root.path()).await;
    let client = enclave.client();
    let (a, b) = tokio::join!(client.create_account(Some("a")), client.create_account(Some("b")));
    let (a, b) = (a.unwrap(), b.unwrap());
    signs(&client, &a, "before the backup").await.unwrap();

    let image = tandem_sdk::attestation::ImageMeasurements::new(
        [(0u8, vec![0x11; 48]), (1, vec![0x12; 48]), (2, vec![0x13; 48])].into(),
    )
    .unwrap();
    let (file, encrypt_time) =
        encrypt(BackupContents::new(a.clone()).with_accepted_images(std::slice::from_ref(&image))).await;

    // Wipe the device (only the backup file survives) and restart the enclave (SIGKILL).
    let (id, address) = (a.id(), a.address());
    drop(a);
    drop(enclave);
    let enclave = Enclave::start(root.path()).await;
    let client = enclave.client();

    // The wrong passphrase, and a caller expecting another account: refused.
    let err = client
        .restore_backup(
            file.clone(),
            Passphrase::new("not the passphrase".into()),
            DecryptOptions::new(),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, SdkError::Backup(BackupError::Decryption)), "{err:?}");
    let err = client
        .restore_backup(
            file.clone(),
            Passphrase::new(PASSPHRASE.into()),
            DecryptOptions::new().expect_account(b.id()),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, SdkError::Backup(BackupError::WrongAccount { .. })),
        "{err:?}"
    );

    // Decrypt + recovery check, then sign.
    let started = Instant::now();
    let restored = client
        .restore_backup(
            file,
            Passphrase::new(PASSPHRASE.into()),
            DecryptOptions::new().expect_account(id),
        )
        .await
        .unwrap();
    let restore_time = started.elapsed();
    eprintln!(
        "default Argon2id (64 MiB, t=3, p=1): backup (encrypt) {encrypt_time:?}; restore (decrypt + recovery check over HTTP) {restore_time:?}"
    );
    assert_eq!(restored.account.id(), id);
    assert_eq!(restored.account.address(), address);
    assert_eq!(restored.account.label(), Some("a"));
    assert_eq!(restored.images(), vec![image]);
    signs(&client, &restored.account, "after the restore").await.unwrap();

    // A backup whose share is not the account's (B's share under A's id, with A's device
    // key, as a mixed-up restore would produce): it decrypts, and the enclave's recovery
    // check refuses it with RECOVERY_FAILED.
    let a_json: Value = serde_json::from_str(restored.account.to_json().unwrap().as_str()).unwrap();
    let mut forged: Value = serde_json::from_str(b.to_json().unwrap().as_str()).unwrap();
    forged["accountId"] = a_json["accountId"].clone();
    forged["authKey"] = a_json["authKey"].clone();
    let forged = Account::from_json(&forged.to_string()).unwrap();
    let (file, _) = encrypt(BackupContents::new(forged)).await;
    let err = client
        .restore_backup(
            file,
            Passphrase::new(PASSPHRASE.into()),
            DecryptOptions::new().expect_account(id),
        )
        .await
        .unwrap_err();
    assert_eq!(server_code(&err), Some(ErrorCode::RecoveryFailed), "{err:?}");
    // Neither account was harmed.
    signs(&client, &restored.account, "a after the forged restore")
        .await
        .unwrap();
    signs(&client, &b, "b after the forged restore").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_keeps_the_address_retires_the_old_share_and_is_timed() {
    let root = tempfile::tempdir().unwrap();
    let enclave = Enclave::start(root.path()).await;
    let client = enclave.client();
    let first = client.create_account(Some("refresh")).await.unwrap();
    let address = first.address();
    let mut current = first.clone();
    let mut refresh_ms = Vec::new();
    let mut confirm_ms = Vec::new();
    for round in 0..5 {
        let started = Instant::now();
        let next = client.refresh(&current).await.unwrap();
        refresh_ms.push(started.elapsed().as_secs_f64() * 1000.0);
        let started = Instant::now();
        client.recover(&next).await.unwrap();
        confirm_ms.push(started.elapsed().as_secs_f64() * 1000.0);
        assert_eq!(next.address(), address, "round {round}");
        assert_eq!(next.public_key(), first.public_key());
        signs(&client, &next, "after a refresh").await.unwrap();
        // The previous device share with the enclave's new share: refused.
        let err = client.sign_digest(&current, [round; 32]).await.unwrap_err();
        assert_eq!(server_code(&err), Some(ErrorCode::MpcInvalidShare), "{err:?}");
        current = next;
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    eprintln!(
        "refresh end to end over HTTP (attest cached): median {:.0} ms refresh + {:.0} ms confirm (recovery check); all refreshes {:?} ms",
        median(&mut refresh_ms.clone()),
        median(&mut confirm_ms),
        refresh_ms.iter().map(|m| m.round() as u64).collect::<Vec<_>>()
    );
    // The original share, five generations old, is useless.
    let err = client.recover(&first).await.unwrap_err();
    assert_eq!(server_code(&err), Some(ErrorCode::RecoveryFailed), "{err:?}");
}

/// Kills the enclave (SIGKILL) as the refresh enters `kill_at` (2: before the first step,
/// 3: before the final message), restarts it, and checks the account still signs with the
/// shares it had, and refreshes again.
async fn interrupted_refresh(kill_at: u8) {
    let root = tempfile::tempdir().unwrap();
    let enclave = Enclave::start(root.path()).await;
    let client = enclave.client();
    let account = client.create_account(Some("interrupted")).await.unwrap();
    signs(&client, &account, "before the refresh").await.unwrap();

    let running = Mutex::new(Some(enclave));
    let err = client
        .refresh_with_progress(&account, tandem_core::engine::RefreshKind::Fast, |stage, _| {
            if stage == kill_at {
                // Dropping the handle SIGKILLs the process and reaps it.
                drop(running.lock().unwrap().take());
            }
        })
        .await
        .unwrap_err();
    assert!(running.lock().unwrap().is_none(), "the enclave was not killed");
    assert!(matches!(err, SdkError::Transport(_)), "stage {kill_at}: {err:?}");

    let enclave = Enclave::start(root.path()).await;
    let client = enclave.client();
    signs(&client, &account, "after the interrupted refresh").await.unwrap();
    client.recover(&account).await.unwrap();
    // The account is not stuck: a refresh runs to the end and is confirmed.
    let refreshed = client.refresh(&account).await.unwrap();
    client.recover(&refreshed).await.unwrap();
    signs(&client, &refreshed, "after the retried refresh").await.unwrap();
    assert_eq!(refreshed.address(), account.address());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_killed_before_its_first_step_leaves_the_account_signing() {
    interrupted_refresh(2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_killed_before_its_final_message_leaves_the_account_signing() {
    interrupted_refresh(3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_killed_between_done_and_confirmation() {
    let root = tempfile::tempdir().unwrap();
    let enclave = Enclave::start(root.path()).await;
    let client = enclave.client();
    let old = client.create_account(Some("unconfirmed")).await.unwrap();
    let new = client.refresh(&old).await.unwrap();
    // SIGKILL right after DONE: the enclave had stored its new share as pending.
    drop(enclave);
    let enclave = Enclave::start(root.path()).await;
    let client = enclave.client();

    // A device that never saved the new share still signs with the old one, and can
    // refresh again; the unconfirmed generation is then dead.
    signs(&client, &old, "old share, refresh unconfirmed").await.unwrap();
    let again = client.refresh(&old).await.unwrap();
    client.recover(&again).await.unwrap();
    let err = client.sign_digest(&new, [1; 32]).await.unwrap_err();
    assert_eq!(server_code(&err), Some(ErrorCode::MpcInvalidShare), "{err:?}");
    let err = client.sign_digest(&old, [2; 32]).await.unwrap_err();
    assert_eq!(server_code(&err), Some(ErrorCode::MpcInvalidShare), "{err:?}");
    signs(&client, &again, "second refresh, confirmed").await.unwrap();

    // A device that did save it confirms it after the restart (here: a second account).
    let old = client.create_account(Some("saved")).await.unwrap();
    let new = client.refresh(&old).await.unwrap();
    drop(enclave);
    let enclave = Enclave::start(root.path()).await;
    let client = enclave.client();
    client.recover(&new).await.unwrap();
    signs(&client, &new, "new share confirmed after the restart")
        .await
        .unwrap();
    let err = client.sign_digest(&old, [3; 32]).await.unwrap_err();
    assert_eq!(server_code(&err), Some(ErrorCode::MpcInvalidShare), "{err:?}");
}
