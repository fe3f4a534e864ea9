//! Issue item 2, the device honours the ban: an enclave whose answers fail the device's OT
//! consistency check (a rogue enclave probing the device's correlation) gets no second
//! attempt with that share — not in the same process, not after the CLI restarts — until
//! a complete refresh replaces the device's OT state. A fast refresh is refused.
#![allow(clippy::unwrap_used)]

use serde_json::Value;
use tandem_testkit::{RogueEnclave, Tandem, error_of};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rogue_enclave_failing_the_ot_check_gets_no_second_attempt_across_a_cli_restart() {
    let rogue = RogueEnclave::start().await;
    let wallet = tempfile::tempdir().unwrap();
    let cli = Tandem::new(
        env!("CARGO_BIN_EXE_tandem"),
        &rogue.url,
        wallet.path(),
        rogue.dev_root.to_str(),
        rogue.pcr_file.to_str(),
    );
    let (ok, v, err) = cli.run(&["account", "create", "--label", "a"]).await;
    assert!(ok, "{v} {err}");

    // The rogue's first signature answer probes the device's OT correlation: caught.
    let (ok, v, _) = cli.run(&["sign", "message", "gm"]).await;
    assert!(!ok);
    assert!(error_of(&v).contains("consistency check"), "{v}");
    assert!(error_of(&v).contains("locked on this device"), "{v}");
    assert_eq!(rogue.sign_starts(), 1);
    let file = std::fs::read_dir(wallet.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().to_str().unwrap().len() == 37)
        .unwrap();
    let stored: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert!(
        stored["enclaveMisbehaved"].as_str().is_some(),
        "the mark is persisted: {stored}"
    );

    // A new CLI process (a restart): refused on the device, the rogue never asked again.
    let (ok, v, _) = cli.run(&["sign", "message", "gm again"]).await;
    assert!(!ok);
    assert!(error_of(&v).contains("locked"), "{v}");
    assert_eq!(rogue.sign_starts(), 1, "no second attempt");
    // A fast refresh would keep the probed OT state: refused on the device too.
    let (ok, v, _) = cli.run(&["account", "refresh"]).await;
    assert!(!ok);
    assert!(error_of(&v).contains("locked"), "{v}");
    let (ok, v, _) = cli.run(&["account", "show", "--offline"]).await;
    assert!(ok);
    assert!(v["locked"].as_str().is_some(), "{v}");

    // A complete refresh sets the OT state up from scratch: the share may sign again (and
    // this rogue, probing again, is caught again).
    let (ok, v, err) = cli.run(&["account", "refresh", "--complete"]).await;
    assert!(ok, "{v} {err}");
    assert_eq!(v["kind"], "complete");
    let (ok, _, _) = cli.run(&["sign", "message", "after"]).await;
    assert!(!ok);
    assert_eq!(rogue.sign_starts(), 2, "the new share was allowed one attempt");
}
