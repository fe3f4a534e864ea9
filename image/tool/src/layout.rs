//! What goes into the image's two ramdisks, and the files that tell the init what to do.
//!
//! The bootstrap ramdisk (measured in PCR1 with the kernel) holds what boots any enclave:
//! `/init`, the NSM module when given, and `/etc/tandem/boot.conf` (modules to load, where
//! to send the boot heartbeat). The application ramdisk (PCR2) holds the enclave binary and
//! `/etc/tandem/enclave.conf`: the program, its production arguments and environment. So
//! a new enclave binary moves PCR2 (and PCR0) and leaves PCR1 alone.
//!
//! Both files are read by our init (`image/init`) with one line format:
//!
//! ```text
//! # comment
//! module /nsm.ko             load this kernel module (in order)
//! heartbeat 3 9000           after the modules: send 0xB7 to vsock CID 3 port 9000
//! exec /usr/local/bin/tandem-enclave
//! arg --listen               one argument per line, the rest of the line verbatim
//! env TANDEM_KMS_REGION=us-east-1
//! ```
//!
//! With `Layout::NitroCli` the same contents are laid out for nitro-cli's own `init` instead
//! (`/rootfs/...`, `/cmd`, `/env`), so that init can be given by path.

use crate::cpio::{Archive, CpioError, Kind};

/// Where the enclave binary lives in the image (as in `Dockerfile.enclave`).
pub const ENCLAVE_PATH: &str = "/usr/local/bin/tandem-enclave";

/// The enclave's production arguments: exactly `Dockerfile.enclave`'s `CMD` after the
/// program (a test keeps the two equal). Nitro mode: the API and the control listener on
/// vsock (any CID), sealed blobs in the parent's blob service (CID 3, port 7000), logs
/// shipped to the parent proxy (port 5002), attestation from the NSM.
pub const PRODUCTION_ARGS: &[&str] = &[
    "--listen",
    "vsock://4294967295:5000",
    "--control-listen",
    "vsock://4294967295:5001",
    "--blob-store",
    "parent:vsock://3:7000",
    "--ship-logs",
    "vsock://3:5002",
    "--log-json",
];

/// The Nitro boot heartbeat: the parent (CID 3) listens on port 9000 and `nitro-cli
/// run-enclave` fails unless the enclave sends it 0xB7 soon after boot.
pub const HEARTBEAT: (u32, u32) = (3, 9000);

/// Which init the layout is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Layout {
    /// Our init (`tandem-init`): `/etc/tandem/{boot,enclave}.conf`, no chroot.
    Tandem,
    /// nitro-cli's `init` blob: `/nsm.ko`, `/rootfs/...`, `/cmd`, `/env`.
    NitroCli,
}

/// The inputs of the two ramdisks.
#[derive(Debug, Clone)]
pub struct Contents {
    /// The init binary.
    pub init: Vec<u8>,
    /// The NSM driver (`nsm.ko`), when the kernel does not build it in.
    pub nsm_module: Option<Vec<u8>>,
    /// Other kernel modules (file name, contents) to load before the NSM driver, in order:
    /// for kernels that build vsock or virtio-mmio as modules (the QEMU `nitro-enclave`
    /// machine with Debian's kernel). nitro-cli's kernel needs none.
    pub modules: Vec<(String, Vec<u8>)>,
    /// The enclave binary.
    pub enclave: Vec<u8>,
    /// The enclave's arguments (normally [`PRODUCTION_ARGS`]).
    pub args: Vec<String>,
    /// Its environment (`KEY=VALUE`), sorted by the caller or not: written in this order.
    pub env: Vec<String>,
}

/// Errors laying out the ramdisks.
#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    /// A value the line format cannot carry.
    #[error("{0:?}: arguments and environment entries cannot contain a newline or NUL")]
    BadValue(String),
    /// An environment entry without `=`.
    #[error("{0:?}: an environment entry is KEY=VALUE")]
    BadEnv(String),
    /// Extra modules with a layout whose init loads only `/nsm.ko`.
    #[error("nitro-cli's init loads /nsm.ko only: extra modules need our init")]
    ModulesNeedOurInit,
    /// A module file name that is not a plain `NAME.ko`.
    #[error("{0:?}: a module is given as a plain NAME.ko file name")]
    BadModuleName(String),
    /// The archive refused an entry.
    #[error(transparent)]
    Cpio(#[from] CpioError),
}

fn check(value: &str) -> Result<(), LayoutError> {
    if value.contains(['\n', '\0']) {
        return Err(LayoutError::BadValue(value.to_string()));
    }
    Ok(())
}

/// `boot.conf` for our init.
pub fn boot_conf(modules: &[&str], heartbeat: Option<(u32, u32)>) -> String {
    let mut s = String::from("# Read by /init at boot (image/init). Part of the bootstrap ramdisk: PCR1.\n");
    for m in modules {
        s.push_str(&format!("module {m}\n"));
    }
    if let Some((cid, port)) = heartbeat {
        s.push_str(&format!("heartbeat {cid} {port}\n"));
    }
    s
}

/// `enclave.conf` for our init.
pub fn enclave_conf(exec: &str, args: &[String], env: &[String]) -> Result<String, LayoutError> {
    let mut s = String::from("# Read by /init at boot (image/init). Part of the application ramdisk: PCR2.\n");
    s.push_str(&format!("exec {exec}\n"));
    for a in args {
        check(a)?;
        s.push_str(&format!("arg {a}\n"));
    }
    for e in env {
        check(e)?;
        if !e.contains('=') {
            return Err(LayoutError::BadEnv(e.clone()));
        }
        s.push_str(&format!("env {e}\n"));
    }
    Ok(s)
}

/// The bootstrap and application ramdisks, uncompressed, with every time set to `mtime`.
pub fn ramdisks(c: &Contents, layout: Layout, mtime: u32) -> Result<(Vec<u8>, Vec<u8>), LayoutError> {
    let mut boot = Archive::new();
    let mut app = Archive::new();
    boot.dir("dev", 0o755)?;
    boot.file("init", c.init.clone(), 0o755)?;
    if let Some(nsm) = &c.nsm_module {
        boot.file("nsm.ko", nsm.clone(), 0o644)?;
    }
    match layout {
        Layout::Tandem => {
            // The kernel opens /dev/console for init's stdio before anything is mounted.
            boot.add("dev/console", Kind::CharDev { major: 5, minor: 1 }, 0o600)?;
            for d in ["proc", "sys", "run"] {
                boot.dir(d, 0o755)?;
            }
            boot.dir("tmp", 0o1777)?;
            let mut modules = Vec::new();
            for (name, bytes) in &c.modules {
                if !name.ends_with(".ko") || name.contains(['/', '\n', '\0']) {
                    return Err(LayoutError::BadModuleName(name.clone()));
                }
                boot.file(&format!("lib/modules/{name}"), bytes.clone(), 0o644)?;
                modules.push(format!("/lib/modules/{name}"));
            }
            if c.nsm_module.is_some() {
                modules.push("/nsm.ko".into());
            }
            let modules: Vec<&str> = modules.iter().map(String::as_str).collect();
            boot.file(
                "etc/tandem/boot.conf",
                boot_conf(&modules, Some(HEARTBEAT)).into_bytes(),
                0o644,
            )?;
            app.file(ENCLAVE_PATH, c.enclave.clone(), 0o755)?;
            app.file(
                "etc/tandem/enclave.conf",
                enclave_conf(ENCLAVE_PATH, &c.args, &c.env)?.into_bytes(),
                0o644,
            )?;
        }
        Layout::NitroCli => {
            if !c.modules.is_empty() {
                return Err(LayoutError::ModulesNeedOurInit);
            }
            for d in ["dev", "run", "sys", "var", "proc", "tmp"] {
                app.dir(&format!("rootfs/{d}"), 0o755)?;
            }
            app.file(&format!("rootfs{ENCLAVE_PATH}"), c.enclave.clone(), 0o755)?;
            let mut cmd = format!("{ENCLAVE_PATH}\n");
            for a in &c.args {
                check(a)?;
                cmd.push_str(&format!("{a}\n"));
            }
            let mut env = String::new();
            for e in &c.env {
                check(e)?;
                env.push_str(&format!("{e}\n"));
            }
            app.file("cmd", cmd.into_bytes(), 0o644)?;
            app.file("env", env.into_bytes(), 0o644)?;
        }
    }
    Ok((boot.to_bytes(mtime)?, app.to_bytes(mtime)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contents() -> Contents {
        Contents {
            init: b"init".to_vec(),
            nsm_module: Some(b"nsm".to_vec()),
            modules: Vec::new(),
            enclave: b"enclave".to_vec(),
            args: PRODUCTION_ARGS.iter().map(|s| s.to_string()).collect(),
            env: vec!["TANDEM_KMS_REGION=us-east-1".into()],
        }
    }

    fn paths(bytes: &[u8]) -> Vec<String> {
        crate::cpio::read(bytes).unwrap().into_iter().map(|e| e.path).collect()
    }

    /// The production arguments are Dockerfile.enclave's CMD: the two build paths start the
    /// enclave the same way.
    #[test]
    fn production_args_are_the_dockerfiles_cmd() {
        let dockerfile =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../Dockerfile.enclave")).unwrap();
        let joined = dockerfile.replace("\\\n", " ");
        let cmd = joined
            .lines()
            .find_map(|l| l.strip_prefix("CMD "))
            .expect("Dockerfile.enclave has a CMD");
        let cmd: Vec<String> = serde_json::from_str(cmd.trim()).unwrap();
        assert_eq!(cmd[0], ENCLAVE_PATH);
        assert_eq!(&cmd[1..], PRODUCTION_ARGS);
    }

    #[test]
    fn our_layout_splits_bootstrap_from_application() {
        let (boot, app) = ramdisks(&contents(), Layout::Tandem, 0).unwrap();
        let boot_paths = paths(&boot);
        for p in [
            "init",
            "nsm.ko",
            "dev/console",
            "etc/tandem/boot.conf",
            "proc",
            "sys",
            "tmp",
        ] {
            assert!(boot_paths.iter().any(|x| x == p), "bootstrap lacks {p}");
        }
        assert!(!boot_paths.iter().any(|p| p.contains("tandem-enclave")));
        assert!(paths(&app).contains(&"usr/local/bin/tandem-enclave".to_string()));
        let entries = crate::cpio::read(&app).unwrap();
        let conf = entries.iter().find(|e| e.path == "etc/tandem/enclave.conf").unwrap();
        let conf = String::from_utf8(conf.data.clone()).unwrap();
        assert!(conf.contains("exec /usr/local/bin/tandem-enclave\narg --listen\narg vsock://4294967295:5000\n"));
        assert!(conf.contains("env TANDEM_KMS_REGION=us-east-1\n"));
        let entries = crate::cpio::read(&boot).unwrap();
        let conf = entries.iter().find(|e| e.path == "etc/tandem/boot.conf").unwrap();
        assert!(String::from_utf8_lossy(&conf.data).contains("module /nsm.ko\nheartbeat 3 9000\n"));
    }

    #[test]
    fn nitro_cli_layout_has_rootfs_cmd_and_env() {
        let (boot, app) = ramdisks(&contents(), Layout::NitroCli, 0).unwrap();
        assert_eq!(paths(&boot), ["dev", "init", "nsm.ko"]);
        let entries = crate::cpio::read(&app).unwrap();
        let cmd = entries.iter().find(|e| e.path == "cmd").unwrap();
        assert!(String::from_utf8_lossy(&cmd.data).starts_with("/usr/local/bin/tandem-enclave\n--listen\n"));
        assert!(entries.iter().any(|e| e.path == "rootfs/usr/local/bin/tandem-enclave"));
    }

    #[test]
    fn extra_modules_load_before_the_nsm_driver() {
        let mut c = contents();
        c.modules = vec![
            ("vsock.ko".into(), b"v".to_vec()),
            ("virtio_mmio.ko".into(), b"m".to_vec()),
        ];
        let (boot, _) = ramdisks(&c, Layout::Tandem, 0).unwrap();
        let entries = crate::cpio::read(&boot).unwrap();
        let conf = entries.iter().find(|e| e.path == "etc/tandem/boot.conf").unwrap();
        assert!(
            String::from_utf8_lossy(&conf.data)
                .contains("module /lib/modules/vsock.ko\nmodule /lib/modules/virtio_mmio.ko\nmodule /nsm.ko\n")
        );
        assert!(entries.iter().any(|e| e.path == "lib/modules/vsock.ko"));
        assert!(matches!(
            ramdisks(&c, Layout::NitroCli, 0),
            Err(LayoutError::ModulesNeedOurInit)
        ));
        c.modules = vec![("../x.ko".into(), vec![])];
        assert!(matches!(
            ramdisks(&c, Layout::Tandem, 0),
            Err(LayoutError::BadModuleName(_))
        ));
    }

    #[test]
    fn refuses_values_that_would_inject_lines() {
        let mut c = contents();
        c.args.push("x\nexec /bin/sh".into());
        assert!(matches!(ramdisks(&c, Layout::Tandem, 0), Err(LayoutError::BadValue(_))));
        let mut c = contents();
        c.env.push("NOEQUALS".into());
        assert!(matches!(ramdisks(&c, Layout::Tandem, 0), Err(LayoutError::BadEnv(_))));
    }
}
