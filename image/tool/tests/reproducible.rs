//! The packer against AWS's own reader, and its reproducibility.
//!
//! Every image here is read back by `aws-nitro-enclaves-image-format`'s `EifReader` (what
//! nitro-cli runs for `describe-eif`): its CRC check, its PCRs, its metadata parser and,
//! for a signed image, its signature check must all agree with what we wrote.

// A test's helpers may unwrap: a panic there is a failed test.
#![allow(clippy::unwrap_used)]

use std::path::Path;

use aws_nitro_enclaves_image_format::utils::eif_reader::EifReader;
use tandem_image::layout::{Contents, Layout, PRODUCTION_ARGS};
use tandem_image::{PackInput, Packed, eif, pack, sign};

fn input(enclave: &[u8], signer: Option<sign::Signer>) -> PackInput {
    PackInput {
        kernel: (0..4096u32).map(|i| (i % 251) as u8).collect(),
        cmdline: "reboot=k panic=30 pci=off console=ttyS0".into(),
        contents: Contents {
            init: b"\x7fELF init".to_vec(),
            nsm_module: Some(b"nsm.ko bytes".to_vec()),
            modules: Vec::new(),
            enclave: enclave.to_vec(),
            args: PRODUCTION_ARGS.iter().map(|s| s.to_string()).collect(),
            env: vec!["TANDEM_KMS_REGION=eu-west-1".into()],
        },
        layout: Layout::Tandem,
        source_date_epoch: 1_700_000_000,
        signer,
        default_mem_mib: 1024,
        default_cpus: 2,
    }
}

fn aws_read(dir: &Path, packed: &Packed) -> EifReader {
    let path = dir.join("enclave.eif");
    std::fs::write(&path, &packed.eif).unwrap();
    EifReader::from_eif(path.to_string_lossy().into_owned()).unwrap()
}

#[test]
fn aws_reader_agrees_on_crc_sections_and_pcrs() {
    let dir = tempfile::tempdir().unwrap();
    let packed = pack(&input(b"enclave binary", None)).unwrap();
    let mut reader = aws_read(dir.path(), &packed);
    assert!(reader.check_crc(), "AWS's reader computes another CRC");
    let header = reader.get_header();
    assert_eq!((header.version, header.num_sections), (4, 5));
    let m = reader.get_measurements().unwrap();
    assert_eq!(m["PCR0"], hex::encode(packed.pcrs.pcr0));
    assert_eq!(m["PCR1"], hex::encode(packed.pcrs.pcr1));
    assert_eq!(m["PCR2"], hex::encode(packed.pcrs.pcr2));
    assert!(!m.contains_key("PCR8"));
    let meta = reader.get_metadata().expect("metadata parses as EifIdentityInfo");
    assert_eq!(meta.build_info.build_time, "2023-11-14T22:13:20+00:00");
    assert_eq!(meta.build_info.build_tool, "tandem-image");

    // Our own reader checks the same file section by section.
    let ours = eif::read(&packed.eif).unwrap();
    assert_eq!(ours.measure(), packed.pcrs);
    let ramdisks = ours.of(eif::SectionType::Ramdisk);
    assert_eq!(ramdisks.len(), 2);
    let app = tandem_image::cpio::read(ramdisks[1]).unwrap();
    let bin = app.iter().find(|e| e.path == "usr/local/bin/tandem-enclave").unwrap();
    assert_eq!(bin.data, b"enclave binary");
    assert_eq!(bin.mode, 0o100755);
}

#[test]
fn same_inputs_same_bytes() {
    let a = pack(&input(b"enclave binary", None)).unwrap();
    let b = pack(&input(b"enclave binary", None)).unwrap();
    assert_eq!(a.eif, b.eif);
    assert_eq!(a.pcrs, b.pcrs);
}

/// One byte of the enclave binary moves PCR2 and PCR0 (which covers everything) and nothing
/// else: the kernel, cmdline and bootstrap ramdisk, and so PCR1, are untouched.
#[test]
fn one_byte_of_the_binary_moves_pcr2_and_pcr0_only() {
    let a = pack(&input(b"enclave binary", None)).unwrap();
    let b = pack(&input(b"enclave binarz", None)).unwrap();
    assert_ne!(a.pcrs.pcr2, b.pcrs.pcr2);
    assert_ne!(a.pcrs.pcr0, b.pcrs.pcr0);
    assert_eq!(a.pcrs.pcr1, b.pcrs.pcr1);
    let (ra, rb) = (eif::read(&a.eif).unwrap(), eif::read(&b.eif).unwrap());
    for kind in [eif::SectionType::Kernel, eif::SectionType::Cmdline] {
        assert_eq!(ra.of(kind), rb.of(kind));
    }
    assert_eq!(ra.of(eif::SectionType::Ramdisk)[0], rb.of(eif::SectionType::Ramdisk)[0]);
    assert_ne!(ra.of(eif::SectionType::Ramdisk)[1], rb.of(eif::SectionType::Ramdisk)[1]);
}

/// A P-384 key and a self-signed certificate, as `openssl req -x509 -newkey ec` makes them.
fn signing_pair() -> (String, Vec<u8>) {
    use openssl::ec::{EcGroup, EcKey};
    use openssl::hash::MessageDigest;
    use openssl::nid::Nid;
    use openssl::pkey::PKey;
    use openssl::x509::{X509, X509NameBuilder};
    let group = EcGroup::from_curve_name(Nid::SECP384R1).unwrap();
    let key = PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap();
    let mut name = X509NameBuilder::new().unwrap();
    name.append_entry_by_text("CN", "tandem image signing (test)").unwrap();
    let name = name.build();
    let mut cert = X509::builder().unwrap();
    cert.set_version(2).unwrap();
    cert.set_subject_name(&name).unwrap();
    cert.set_issuer_name(&name).unwrap();
    cert.set_pubkey(&key).unwrap();
    cert.set_not_before(&openssl::asn1::Asn1Time::days_from_now(0).unwrap())
        .unwrap();
    cert.set_not_after(&openssl::asn1::Asn1Time::days_from_now(30).unwrap())
        .unwrap();
    cert.sign(&key, MessageDigest::sha384()).unwrap();
    let pem = String::from_utf8(key.private_key_to_pem_pkcs8().unwrap()).unwrap();
    (pem, cert.build().to_pem().unwrap())
}

#[test]
fn signed_images_verify_with_aws_code_and_carry_pcr8() {
    let dir = tempfile::tempdir().unwrap();
    let (key, cert) = signing_pair();
    let signer = || sign::Signer::from_pem(&key, &cert).unwrap();
    let packed = pack(&input(b"enclave binary", Some(signer()))).unwrap();
    let pcr8 = packed.pcrs.pcr8.expect("a signed image has PCR8");
    let mut reader = aws_read(dir.path(), &packed);
    assert!(reader.check_crc());
    let m = reader.get_measurements().unwrap();
    assert_eq!(m["PCR8"], hex::encode(pcr8));
    assert_eq!(m["PCR0"], hex::encode(packed.pcrs.pcr0));
    reader.get_certificate_info(m).unwrap();
    assert_eq!(
        reader.sign_check,
        Some(true),
        "AWS's code does not accept our signature"
    );
    // RFC 6979: signing is deterministic, so signed images are reproducible too.
    assert_eq!(pack(&input(b"enclave binary", Some(signer()))).unwrap().eif, packed.eif);
    // Our reader verifies it as well, and refuses it against another PCR0.
    let ours = eif::read(&packed.eif).unwrap();
    let section = ours.of(eif::SectionType::Signature)[0];
    assert_eq!(sign::verify_section(section, &packed.pcrs.pcr0).unwrap(), pcr8);
    assert!(sign::verify_section(section, &[0; 48]).is_err());
}

#[test]
fn a_certificate_for_another_key_is_refused() {
    let (key, _) = signing_pair();
    let (_, other_cert) = signing_pair();
    assert!(matches!(
        sign::Signer::from_pem(&key, &other_cert),
        Err(sign::SignError::Mismatch)
    ));
}
