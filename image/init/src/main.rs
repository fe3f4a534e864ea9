//! `tandem-init`: PID 1 of the Tandem enclave image (as QuorumOS's init is of theirs).
//!
//! In order: mount what the enclave needs (`/proc`, `/sys`, `/dev`, `/tmp`, `/run`), load
//! the kernel modules `boot.conf` names (the NSM driver in production; virtio and vsock in
//! the QEMU test), send the Nitro boot heartbeat (0xB7 to the parent, vsock CID 3 port
//! 9000, which `nitro-cli run-enclave` waits for), then start the program `enclave.conf`
//! names with its arguments and only its environment, reap every child, and power the
//! enclave off when the program ends (an enclave that lost its server should not linger).
//!
//! Configuration (see `image/tool/src/layout.rs` for the writer): `/etc/tandem/boot.conf`
//! (bootstrap ramdisk, PCR1) then `/etc/tandem/enclave.conf` (application ramdisk, PCR2),
//! one directive a line: `module PATH`, `heartbeat CID PORT`, `exec PATH`, `arg VALUE`,
//! `env KEY=VALUE`. A later ramdisk may replace either file (the QEMU test does).

mod conf;

use std::io::{Read as _, Write as _};
use std::os::fd::AsRawFd as _;
use std::process::Command;
use std::time::Duration;

use nix::mount::{MsFlags, mount};
use nix::sys::socket::{AddressFamily, SockFlag, SockType, VsockAddr, connect, socket};
use nix::sys::wait::{WaitStatus, waitpid};

const BOOT_CONF: &str = "/etc/tandem/boot.conf";
const ENCLAVE_CONF: &str = "/etc/tandem/enclave.conf";

fn log(msg: &str) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "tandem-init: {msg}");
}

/// Mounts the pseudo file systems, each with the fewest rights it works with.
fn mount_all() {
    let nosuid_noexec = MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC;
    let nodev = nosuid_noexec | MsFlags::MS_NODEV;
    let mounts: [(&str, &str, &str, MsFlags, &str); 5] = [
        ("proc", "/proc", "proc", nodev, ""),
        ("sysfs", "/sys", "sysfs", nodev, ""),
        ("devtmpfs", "/dev", "devtmpfs", nosuid_noexec, "mode=0755"),
        ("tmpfs", "/tmp", "tmpfs", nodev, "mode=1777"),
        ("tmpfs", "/run", "tmpfs", nodev, "mode=0755"),
    ];
    for (source, target, fstype, flags, data) in mounts {
        let _ = std::fs::create_dir_all(target);
        if let Err(e) = mount(Some(source), target, Some(fstype), flags, Some(data)) {
            log(&format!("cannot mount {target}: {e}"));
        }
    }
}

/// Loads one module with the parameters the kernel command line gives it
/// (`NAME.key=value`, as modprobe passes them: the kernel applies those only to built-in
/// code; e.g. `virtio_mmio.device=…`, which QEMU's microvm machines use to describe their
/// devices). "Already loaded" is fine.
fn load_module(path: &str, cmdline: &str) -> Result<(), String> {
    let file = std::fs::File::open(path).map_err(|e| format!("{path}: {e}"))?;
    let params = conf::module_params(path, cmdline);
    let params = std::ffi::CString::new(params).map_err(|e| format!("{path}: parameters: {e}"))?;
    match nix::kmod::finit_module(&file, &params, nix::kmod::ModuleInitFlags::empty()) {
        Ok(()) | Err(nix::errno::Errno::EEXIST) => Ok(()),
        Err(e) => Err(format!("{path}: {e}")),
    }
}

/// Sends 0xB7 to the parent and waits (briefly) for the echo, as nitro-cli expects.
fn heartbeat(cid: u32, port: u32) -> Result<(), String> {
    let fd = socket(AddressFamily::Vsock, SockType::Stream, SockFlag::SOCK_CLOEXEC, None)
        .map_err(|e| format!("vsock socket: {e}"))?;
    connect(fd.as_raw_fd(), &VsockAddr::new(cid, port)).map_err(|e| format!("connect {cid}:{port}: {e}"))?;
    let mut stream = std::fs::File::from(fd);
    stream.write_all(&[0xB7]).map_err(|e| format!("write: {e}"))?;
    let mut echo = [0u8; 1];
    stream.read_exact(&mut echo).map_err(|e| format!("read: {e}"))?;
    Ok(())
}

fn power_off() -> ! {
    // SAFETY of intent: PID 1 ending would panic the kernel; power off cleanly instead.
    let _ = nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_POWER_OFF);
    loop {
        std::thread::sleep(Duration::from_secs(60));
    }
}

fn main() {
    mount_all();
    let mut text = String::new();
    for path in [BOOT_CONF, ENCLAVE_CONF] {
        match std::fs::read_to_string(path) {
            Ok(t) => text.push_str(&t),
            Err(e) => log(&format!("{path}: {e}")),
        }
    }
    let conf = match conf::Conf::parse(&text) {
        Ok(c) => c,
        Err(e) => {
            log(&format!("bad configuration: {e}"));
            power_off();
        }
    };
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    for m in &conf.modules {
        match load_module(m, &cmdline) {
            Ok(()) => log(&format!("loaded {m}")),
            Err(e) => {
                // Without its modules (the NSM, vsock) the enclave cannot work: stop here.
                log(&format!("cannot load {e}"));
                power_off();
            }
        }
    }
    if let Some((cid, port)) = conf.heartbeat {
        match heartbeat(cid, port) {
            Ok(()) => log(&format!("boot heartbeat sent to vsock {cid}:{port}")),
            Err(e) => log(&format!("boot heartbeat to vsock {cid}:{port} failed: {e}")),
        }
    }
    let Some(exec) = conf.exec.clone() else {
        log("enclave.conf names no program (exec)");
        power_off();
    };
    log(&format!("starting {exec}"));
    let child = Command::new(&exec)
        .args(&conf.args)
        .env_clear()
        .envs(conf.env.iter().map(|(k, v)| (k, v)))
        .current_dir("/")
        .spawn();
    let child = match child {
        Ok(c) => c,
        Err(e) => {
            log(&format!("cannot start {exec}: {e}"));
            power_off();
        }
    };
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    // PID 1 reaps every orphan; the enclave's own exit ends the enclave.
    loop {
        match waitpid(None, None) {
            Ok(WaitStatus::Exited(p, code)) if p == pid => {
                log(&format!("{exec} exited with status {code}"));
                break;
            }
            Ok(WaitStatus::Signaled(p, sig, _)) if p == pid => {
                log(&format!("{exec} killed by {sig}"));
                break;
            }
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => {
                log(&format!("wait: {e}"));
                break;
            }
        }
    }
    power_off();
}
