//! Bundle updates: an application or firmware file that a hook of the
//! agent's own config installs (`[ota.hooks.<name>]`; a release names the
//! hook, never a command) and whose `check` command decides, after the
//! health window, whether it stays. Rolling back is installing the
//! committed file again with the same hook: slot A is whatever the last
//! committed file was.

use std::collections::BTreeMap;
use std::os::unix::process::CommandExt as _;
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
        // Its own process group, so that a timeout stops what it started
        // too (an installer run by `sh -c`), not the shell alone.
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    // Read as it comes: a hook that writes more than the pipe holds would
    // otherwise stall until its timeout.
    let stderr = child
        .stderr
        .take()
        .map(|pipe| std::thread::spawn(move || tail_of(pipe)));
    let started = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if started.elapsed() > timeout => {
                kill_group(&mut child);
                return Err(format!("{program} ran longer than {} s", timeout.as_secs()));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => {
                kill_group(&mut child);
                return Err(format!("cannot wait for {program}: {e}"));
            }
        }
    };
    // The pipe ends when the last process holding it does; one the hook
    // left running may keep it open, so its tail is not waited for then.
    let tail = stderr
        .filter(|reader| {
            let until = Instant::now() + Duration::from_secs(1);
            while !reader.is_finished() && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(10));
            }
            reader.is_finished()
        })
        .and_then(|reader| reader.join().ok())
        .unwrap_or_default();
    if status.success() {
        return Ok(());
    }
    Err(format!(
        "{program} failed ({status}){}",
        if tail.is_empty() {
            String::new()
        } else {
            format!(": {tail}")
        }
    ))
}

/// The last 300 characters of what `pipe` gives until it ends, trimmed.
fn tail_of(mut pipe: impl std::io::Read) -> String {
    const KEEP: usize = 4096;
    let (mut kept, mut chunk) = (Vec::new(), [0u8; 4096]);
    loop {
        match pipe.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                kept.extend_from_slice(&chunk[..n]);
                if kept.len() > 2 * KEEP {
                    kept.drain(..kept.len() - KEEP);
                }
            }
        }
    }
    let text = String::from_utf8_lossy(&kept);
    let text = text.trim();
    let skip = text.chars().count().saturating_sub(300);
    text.chars().skip(skip).collect()
}

/// Stops a hook and every process of its group, and reaps it.
fn kill_group(child: &mut std::process::Child) {
    // `kill -- -PGID`: no signal API of our own (the workspace forbids
    // unsafe code), and every gateway has kill.
    let group = format!("-{}", child.id());
    let _ = Command::new("kill")
        .args(["-KILL", "--", &group])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    let _ = child.kill();
    let _ = child.wait();
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
        // What the hook started goes with it.
        let e = run(
            &sh("(sleep 1; touch orphan) & wait"),
            &bundle,
            dir.path(),
            Duration::from_millis(200),
        )
        .unwrap_err();
        assert!(e.contains("longer than"), "{e}");
        std::thread::sleep(Duration::from_millis(1500));
        assert!(!dir.path().join("orphan").exists());
        // A hook that writes more than a pipe holds is not held up by it.
        let e = run(
            &sh("head -c 300000 /dev/zero | tr '\\0' x >&2; echo the end >&2; exit 4"),
            &bundle,
            dir.path(),
            Duration::from_secs(20),
        )
        .unwrap_err();
        assert!(e.ends_with("the end"), "{e}");
        assert!(!e.contains("longer than"), "{e}");
        assert!(run(&["/no/such/program".into()], &bundle, dir.path(), t).is_err());
        let mut hooks = BTreeMap::new();
        hooks.insert("app".to_owned(), HookConfig::default());
        assert!(validate(&hooks).is_err());
    }
}
