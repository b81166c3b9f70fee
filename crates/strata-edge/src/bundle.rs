//! Bundle updates: an application or firmware file that a hook of the
//! agent's own config installs (`[ota.hooks.<name>]`; a release names the
//! hook, never a command) and whose `check` command decides, after the
//! health window, whether it stays. Rolling back is installing the
//! committed file again with the same hook: slot A is whatever the last
//! committed file was.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::Deserialize;

/// The commands of one install hook.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HookConfig {
    /// Installs the file: a program and its arguments (no shell unless
    /// named). Gets `STRATA_BUNDLE` (the file), `STRATA_BUNDLE_NAME`,
    /// `STRATA_BUNDLE_VERSION`.
    pub install: Vec<String>,
    /// Tells, after the health window, whether the installed bundle works
    /// (exit status 0); none: installing is enough.
    #[serde(default)]
    pub check: Vec<String>,
    /// Longest a command may run, in seconds (default 120).
    #[serde(default = "default_timeout")]
    pub timeout_s: u64,
}

fn default_timeout() -> u64 {
    120
}

/// What a hook runs for.
pub struct Bundle<'a> {
    /// The release name.
    pub name: &'a str,
    /// Its version.
    pub version: u64,
    /// The file.
    pub file: &'a Path,
}

/// Checks every hook has an install command.
pub fn validate(hooks: &BTreeMap<String, HookConfig>) -> Result<(), String> {
    for (name, hook) in hooks {
        if hook.install.is_empty() {
            return Err(format!("[ota.hooks.{name}] install: name a program"));
        }
    }
    Ok(())
}

/// Runs `command` for `bundle` in `dir`; an error says what failed, with
/// the end of what the command wrote on stderr.
pub fn run(
    command: &[String],
    bundle: &Bundle<'_>,
    dir: &Path,
    timeout: Duration,
) -> Result<(), String> {
    let Some((program, args)) = command.split_first() else {
        return Ok(());
    };
    let mut child = Command::new(program)
        .args(args)
        .current_dir(dir)
        .env("STRATA_BUNDLE", bundle.file)
        .env("STRATA_BUNDLE_NAME", bundle.name)
        .env("STRATA_BUNDLE_VERSION", bundle.version.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    let started = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if started.elapsed() > timeout => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("{program} ran longer than {} s", timeout.as_secs()));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(format!("cannot wait for {program}: {e}")),
        }
    };
    if status.success() {
        return Ok(());
    }
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut pipe, &mut stderr);
    }
    let tail: String = stderr
        .trim()
        .chars()
        .rev()
        .take(300)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    Err(format!(
        "{program} failed ({status}){}",
        if tail.is_empty() {
            String::new()
        } else {
            format!(": {tail}")
        }
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Vec<String> {
        vec!["sh".into(), "-c".into(), script.into()]
    }

    #[test]
    fn hooks_see_the_bundle_and_report_failures() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("app.bin");
        std::fs::write(&file, "v7").unwrap();
        let bundle = Bundle {
            name: "app",
            version: 7,
            file: &file,
        };
        let t = Duration::from_secs(10);
        run(&sh("cp \"$STRATA_BUNDLE\" installed && echo $STRATA_BUNDLE_NAME $STRATA_BUNDLE_VERSION > meta"), &bundle, dir.path(), t).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join("installed")).unwrap(),
            "v7"
        );
        assert_eq!(
            std::fs::read_to_string(dir.path().join("meta")).unwrap(),
            "app 7\n"
        );
        let e = run(&sh("echo disk full >&2; exit 3"), &bundle, dir.path(), t).unwrap_err();
        assert!(e.contains("disk full"), "{e}");
        let e = run(
            &sh("sleep 5"),
            &bundle,
            dir.path(),
            Duration::from_millis(100),
        )
        .unwrap_err();
        assert!(e.contains("longer than"), "{e}");
        assert!(run(&["/no/such/program".into()], &bundle, dir.path(), t).is_err());
        let mut hooks = BTreeMap::new();
        hooks.insert("app".to_owned(), HookConfig::default());
        assert!(validate(&hooks).is_err());
    }
}
