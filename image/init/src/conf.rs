//! The init's configuration: `boot.conf` and `enclave.conf`, one directive a line.

/// What the init does, read from both files (in that order).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Conf {
    /// Kernel modules to load, in order.
    pub(crate) modules: Vec<String>,
    /// Where to send the boot heartbeat (vsock CID, port).
    pub(crate) heartbeat: Option<(u32, u32)>,
    /// The program to start.
    pub(crate) exec: Option<String>,
    /// Its arguments.
    pub(crate) args: Vec<String>,
    /// Its whole environment.
    pub(crate) env: Vec<(String, String)>,
}

impl Conf {
    /// Parses the directives; an unknown directive or a malformed value is an error (an
    /// image must not boot on a configuration it misreads).
    pub(crate) fn parse(text: &str) -> Result<Conf, String> {
        let mut c = Conf::default();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim_end_matches('\r');
            if line.trim().is_empty() || line.trim_start().starts_with('#') {
                continue;
            }
            let (directive, value) = line.split_once(' ').unwrap_or((line, ""));
            let bad = |what: &str| format!("line {}: {what}: {line:?}", n + 1);
            match directive {
                "module" if !value.is_empty() => c.modules.push(value.to_string()),
                "heartbeat" => {
                    let mut parts = value.split_whitespace().map(str::parse::<u32>);
                    match (parts.next(), parts.next(), parts.next()) {
                        (Some(Ok(cid)), Some(Ok(port)), None) => c.heartbeat = Some((cid, port)),
                        _ => return Err(bad("heartbeat CID PORT")),
                    }
                }
                "exec" if !value.is_empty() => c.exec = Some(value.to_string()),
                "arg" => c.args.push(value.to_string()),
                "env" => match value.split_once('=') {
                    Some((k, v)) if !k.is_empty() => c.env.push((k.to_string(), v.to_string())),
                    _ => return Err(bad("env KEY=VALUE")),
                },
                _ => return Err(bad("unknown directive")),
            }
        }
        Ok(c)
    }
}

/// The parameters the kernel command line gives module `path` (`NAME.key=value` →
/// `key=value`, space-separated; `-` and `_` are the same in a module name).
pub(crate) fn module_params(path: &str, cmdline: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    let name = file.strip_suffix(".ko").unwrap_or(file).replace('-', "_");
    cmdline
        .split_whitespace()
        .filter_map(|arg| {
            let (module, param) = arg.split_once('.')?;
            (module.replace('-', "_") == name && param.contains('=')).then_some(param)
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_both_files() {
        let text = "# boot\nmodule /nsm.ko\nheartbeat 3 9000\n\
                    # enclave\nexec /usr/local/bin/tandem-enclave\narg --listen\narg vsock://4294967295:5000\n\
                    arg with spaces kept\nenv TANDEM_KMS_REGION=us-east-1\nenv EMPTY=\n";
        let c = Conf::parse(text).unwrap();
        assert_eq!(c.modules, ["/nsm.ko"]);
        assert_eq!(c.heartbeat, Some((3, 9000)));
        assert_eq!(c.exec.as_deref(), Some("/usr/local/bin/tandem-enclave"));
        assert_eq!(c.args, ["--listen", "vsock://4294967295:5000", "with spaces kept"]);
        assert_eq!(
            c.env,
            [
                ("TANDEM_KMS_REGION".to_string(), "us-east-1".to_string()),
                ("EMPTY".to_string(), String::new())
            ]
        );
    }

    #[test]
    fn module_parameters_come_from_the_kernel_command_line() {
        let cmdline = "console=ttyS0 virtio_mmio.device=512@0xfeb00e00:12 virtio-mmio.device=512@0xfeb00c00:11 \
                       vsock.x=1 virtio_mmio.nodevice";
        assert_eq!(
            module_params("/lib/modules/virtio_mmio.ko", cmdline),
            "device=512@0xfeb00e00:12 device=512@0xfeb00c00:11"
        );
        assert_eq!(module_params("/nsm.ko", cmdline), "");
    }

    #[test]
    fn refuses_what_it_cannot_read() {
        assert!(Conf::parse("heartbeat 3\n").is_err());
        assert!(Conf::parse("heartbeat x 9000\n").is_err());
        assert!(Conf::parse("env NOEQUALS\n").is_err());
        assert!(Conf::parse("run /bin/sh\n").is_err());
        assert!(Conf::parse("module\n").is_err());
    }
}
