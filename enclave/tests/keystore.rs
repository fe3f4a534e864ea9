//! The keystore with real shares, in process: unsealing cost, bytes per account, key
//! isolation, rotation, and injected storage failures.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use tandem_core::{AccountId, ErrorCode, KeyShare};
use tandem_enclave::error::EnclaveError;
use tandem_enclave::keystore::{
    BlobName, BlobStore, Expect, FileBlobStore, KeyWrapper, Keystore, KeystoreError, LocalKeyWrapper, Lock,
    MemoryBlobStore, SEAL_OVERHEAD, StoredAccount, Versioned, prune, ring, rotate,
};
use zeroize::Zeroizing;

/// The enclave's share of a cached in-process DKG.
fn enclave_share() -> KeyShare {
    (*tandem_testkit::shares::first().1).clone()
}

fn code(e: KeystoreError) -> ErrorCode {
    EnclaveError::from(e).code()
}

async fn open_key_ring(
    store: &Arc<dyn BlobStore>,
    wrapper: &LocalKeyWrapper,
) -> Result<tandem_enclave::keystore::Sealer, KeystoreError> {
    ring::open(store, wrapper).await.map(|r| r.sealer)
}

fn account(share: &Arc<KeyShare>) -> StoredAccount {
    StoredAccount {
        id: AccountId::random().unwrap(),
        generation: 0,
        device_ot: None,
        label: Some("bench".into()),
        client_node_id: None,
        created_at: 1,
        auth_key: Some([7; 32]),
        current: share.clone(),
        pending: None,
        locked: None,
    }
}

async fn keystore(store: Arc<dyn BlobStore>, master: u8) -> Keystore {
    let wrapper = LocalKeyWrapper::new(Zeroizing::new([master; 32]));
    let ks = Keystore::not_ready(store);
    ks.open_ring(&wrapper).await.unwrap();
    ks
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsealing_costs_microseconds_and_an_account_is_a_few_kilobytes() {
    let share = Arc::new(enclave_share());
    let dir = tempfile::tempdir().unwrap();
    let files = Arc::new(FileBlobStore::open(dir.path()).unwrap());
    let ks = keystore(files.clone(), 1).await;
    let a = account(&share);
    let id = a.id;
    ks.save(a).await.unwrap();

    let bytes = std::fs::metadata(files.path(&BlobName::Account(id))).unwrap().len();
    let sealed = files.get(&BlobName::Account(id)).unwrap().unwrap().blob.len();
    println!(
        "bytes stored per account: {bytes} on disk ({sealed} sealed = record + {SEAL_OVERHEAD} header/tag, + 12 store framing)"
    );
    assert!(bytes < 64 * 1024, "{bytes}");

    // Cache hit: what every request after the first pays.
    let n = 2000;
    let t = Instant::now();
    for _ in 0..n {
        assert_eq!(ks.load(id).await.unwrap().id, id);
    }
    let hit = t.elapsed().as_secs_f64() * 1e6 / f64::from(n);

    // Cold: read the file, authenticate and decrypt, decode the share.
    let n = 200;
    let t = Instant::now();
    for _ in 0..n {
        ks.evict(&id).await;
        assert_eq!(ks.load(id).await.unwrap().id, id);
    }
    let cold = t.elapsed().as_secs_f64() * 1e6 / f64::from(n);

    // The AEAD alone, without file I/O or share decoding.
    let blob = files.get(&BlobName::Account(id)).unwrap().unwrap().blob;
    let wrapper = LocalKeyWrapper::new(Zeroizing::new([1; 32]));
    let sealer = open_key_ring(&(files.clone() as Arc<dyn BlobStore>), &wrapper)
        .await
        .unwrap();
    let n = 2000;
    let t = Instant::now();
    for _ in 0..n {
        assert!(!sealer.open(&id, 1, &blob).unwrap().is_empty());
    }
    let aead = t.elapsed().as_secs_f64() * 1e6 / f64::from(n);
    println!("unseal per request: cache hit {hit:.2} us, cold unseal {cold:.1} us (of which AEAD open {aead:.1} us)");
    // Microseconds, not a KMS round trip (tens of milliseconds). Release measured 0.14 us
    // (hit) and ~430 us (cold, 52 KB blob); a debug build runs the generic AEAD code
    // unoptimised (~14 ms cold), so its bounds are loose for a loaded 2-core machine.
    let (hit_max, cold_max) = if cfg!(debug_assertions) {
        (1_000.0, 200_000.0)
    } else {
        (50.0, 5_000.0)
    };
    assert!(hit < hit_max, "cache hit {hit} us");
    assert!(cold < cold_max, "cold unseal {cold} us");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blobs_are_bound_to_their_account_and_their_keys() {
    let share = Arc::new(enclave_share());
    let store: Arc<dyn BlobStore> = Arc::new(MemoryBlobStore::default());
    let ks = keystore(store.clone(), 1).await;
    let (a, b) = (account(&share), account(&share));
    let (ida, idb) = (a.id, b.id);
    ks.save(a).await.unwrap();
    ks.save(b).await.unwrap();

    // A's blob copied under B's id: refused for B, A unaffected.
    let blob_a = store.get(&BlobName::Account(ida)).unwrap().unwrap().blob;
    store.put(&BlobName::Account(idb), &blob_a, Expect::Any).unwrap();
    let fresh = keystore(store.clone(), 1).await;
    let err = fresh.load(idb).await.unwrap_err();
    assert!(matches!(err, KeystoreError::Corrupt(_)), "{err:?}");
    assert_eq!(code(err), ErrorCode::KeystoreError);
    assert_eq!(fresh.load(ida).await.unwrap().id, ida);

    // The same blobs under another master key: the ring does not unwrap, and a keystore
    // with its own ring cannot open them.
    let other_store: Arc<dyn BlobStore> = Arc::new(MemoryBlobStore::default());
    other_store
        .put(&BlobName::Account(ida), &blob_a, Expect::Absent)
        .unwrap();
    let other = keystore(other_store, 2).await;
    let err = other.load(ida).await.unwrap_err();
    assert!(matches!(err, KeystoreError::Corrupt(_)), "{err:?}");
    let wrong_master = LocalKeyWrapper::new(Zeroizing::new([2; 32]));
    assert!(open_key_ring(&store, &wrong_master).await.is_err());
}

/// A store whose writes fail on demand (a full disk, a dead parent), reads still work.
struct FailingStore {
    inner: MemoryBlobStore,
    fail: AtomicBool,
}

impl BlobStore for FailingStore {
    fn get(&self, name: &BlobName) -> Result<Option<Versioned>, KeystoreError> {
        self.inner.get(name)
    }
    fn put(&self, name: &BlobName, blob: &[u8], expect: Expect) -> Result<u64, KeystoreError> {
        if self.fail.load(Ordering::SeqCst) {
            return Err(KeystoreError::Io("write temp blob: StorageFull (injected)".into()));
        }
        self.inner.put(name, blob, expect)
    }
    fn delete(&self, name: &BlobName) -> Result<(), KeystoreError> {
        self.inner.delete(name)
    }
    fn list(&self) -> Result<Vec<BlobName>, KeystoreError> {
        self.inner.list()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_write_is_a_keystore_error_and_keeps_the_previous_blob() {
    let share = Arc::new(enclave_share());
    let store = Arc::new(FailingStore {
        inner: MemoryBlobStore::default(),
        fail: AtomicBool::new(false),
    });
    let ks = keystore(store.clone(), 1).await;
    let a = account(&share);
    let id = a.id;
    ks.save(a).await.unwrap();
    let before = store.get(&BlobName::Account(id)).unwrap().unwrap();

    store.fail.store(true, Ordering::SeqCst);
    let err = ks
        .update(id, |a| {
            Some(StoredAccount {
                label: Some("renamed".into()),
                ..a.clone()
            })
        })
        .await
        .unwrap_err();
    assert_eq!(code(err), ErrorCode::KeystoreError);
    let err = ks.save(account(&share)).await.unwrap_err();
    assert_eq!(code(err), ErrorCode::KeystoreError);
    // Nothing changed on "disk", and the account still loads as it was.
    assert_eq!(store.get(&BlobName::Account(id)).unwrap().unwrap(), before);
    assert_eq!(store.list().unwrap().len(), 2, "the key ring and the one account");
    assert_eq!(ks.load(id).await.unwrap().label.as_deref(), Some("bench"));

    store.fail.store(false, Ordering::SeqCst);
    let updated = ks
        .update(id, |a| {
            Some(StoredAccount {
                label: Some("renamed".into()),
                ..a.clone()
            })
        })
        .await
        .unwrap();
    assert_eq!(updated.label.as_deref(), Some("renamed"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_writer_loses_instead_of_overwriting() {
    let share = Arc::new(enclave_share());
    let store: Arc<dyn BlobStore> = Arc::new(MemoryBlobStore::default());
    let first = keystore(store.clone(), 1).await;
    let a = account(&share);
    let id = a.id;
    first.save(a).await.unwrap();
    first.load(id).await.unwrap();
    // A second writer (another enclave instance on the same store) updates the account.
    let second = keystore(store.clone(), 1).await;
    second
        .update(id, |a| Some(a.locked_now("by the second writer".into(), 1)))
        .await
        .unwrap();
    // The first one's cached version is stale: its update is refused, not applied over.
    let err = first
        .update(id, |a| {
            Some(StoredAccount {
                label: Some("lost update".into()),
                ..a.clone()
            })
        })
        .await
        .unwrap_err();
    assert!(matches!(err, KeystoreError::Conflict { .. }), "{err:?}");
    // After the refusal it reloads and sees the other writer's change.
    let now = first.load(id).await.unwrap();
    assert_eq!(
        now.locked.as_ref().map(|l: &Lock| l.reason.as_str()),
        Some("by the second writer")
    );
    assert_eq!(now.label.as_deref(), Some("bench"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_reseals_and_prunes_through_the_keystore() {
    let share = Arc::new(enclave_share());
    let store: Arc<dyn BlobStore> = Arc::new(MemoryBlobStore::default());
    let wrapper = LocalKeyWrapper::new(Zeroizing::new([5; 32]));
    let ks = Keystore::not_ready(store.clone());
    ks.open_ring(&wrapper).await.unwrap();
    let ids: Vec<_> = (0..3).map(|_| account(&share)).collect();
    for a in &ids {
        ks.save(a.clone()).await.unwrap();
    }
    let old_ids = ks.key_ids_in_use().await.unwrap();
    assert_eq!(old_ids.len(), 1);

    ks.set_sealer(rotate(&store, &wrapper).await.unwrap());
    // Old blobs still open after the rotation (fresh keystore: no cache).
    let reopened = Keystore::new(store.clone(), open_key_ring(&store, &wrapper).await.unwrap());
    for a in &ids {
        assert_eq!(reopened.load(a.id).await.unwrap().id, a.id);
    }
    let report = ks.reseal_all().await.unwrap();
    assert_eq!((report.resealed, report.current, report.failed), (3, 0, 0));
    let in_use = ks.key_ids_in_use().await.unwrap();
    assert_eq!(in_use.len(), 1);
    assert_ne!(in_use, old_ids);
    assert_eq!(prune(&store, &wrapper, &in_use).await.unwrap(), old_ids);
    let pruned = Keystore::new(store.clone(), open_key_ring(&store, &wrapper).await.unwrap());
    for a in &ids {
        assert_eq!(pruned.load(a.id).await.unwrap().id, a.id);
    }
    assert_eq!(wrapper.kind(), "local");
}

#[tokio::test]
async fn a_keystore_that_has_not_booted_refuses_with_keystore_error() {
    let ks = Keystore::not_ready(Arc::new(MemoryBlobStore::default()));
    let err = ks.load(AccountId::random().unwrap()).await.unwrap_err();
    assert!(matches!(err, KeystoreError::NotReady(_)), "{err:?}");
    assert_eq!(code(err), ErrorCode::KeystoreError);
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap()
}

/// Review finding M3, issue item 7: the cache of unsealed accounts is bounded. With room
/// for N accounts, using 5·N keeps at most N unsealed (the others are unsealed again on
/// use), and the process's resident memory grows by about N accounts' worth, not 5·N.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn using_five_times_the_cache_keeps_at_most_the_cache_unsealed() {
    const N: usize = 100;
    let share = Arc::new(enclave_share());
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn BlobStore> = Arc::new(FileBlobStore::open(dir.path()).unwrap());
    let wrapper = LocalKeyWrapper::new(Zeroizing::new([6; 32]));
    let ks = Keystore::with_options(
        store.clone(),
        Arc::new(tandem_enclave::guard::MemoryGuard::default()),
        N,
    );
    ks.open_ring(&wrapper).await.unwrap();
    let mut ids = Vec::new();
    for _ in 0..5 * N {
        let a = account(&share);
        ids.push(a.id);
        ks.save(a).await.unwrap();
    }
    // Start from an empty cache, then use every account twice.
    for id in &ids {
        ks.evict(id).await;
    }
    let before = rss_kib();
    for _ in 0..2 {
        for id in &ids {
            assert_eq!(ks.load(*id).await.unwrap().id, *id);
            assert!(ks.cached_len() <= N);
        }
    }
    assert_eq!(ks.cached_len(), N);
    let grown = rss_kib().saturating_sub(before);
    let per_account = share.to_bytes().unwrap().len() as u64 / 1024 + 1;
    println!(
        "cache of {N}: {} accounts used, {} unsealed in memory, RSS grew {grown} KiB ({} KiB per cached account; a share is {per_account} KiB serialized)",
        5 * N,
        ks.cached_len(),
        grown / N as u64
    );
    // An unsealed account is about 50 KiB: N of them, with allocator slack, stay far
    // below what 5·N would take (~25 MiB).
    assert!(grown < 16 * 1024, "RSS grew {grown} KiB for a cache of {N}");
}
