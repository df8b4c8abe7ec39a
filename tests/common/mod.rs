//! Helpers for the end-to-end tests: run the real `vigil` binary, make a
//! fresh scratch directory.
#![allow(dead_code, clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;

pub mod cluster;
pub mod run;

/// Runs `vigil ARGS`, feeding `stdin` if given, and waits for it.
pub fn vigil_with_input(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_vigil"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut pipe = child.stdin.take().unwrap();
    if let Some(data) = stdin {
        pipe.write_all(data).unwrap();
    }
    drop(pipe);
    child.wait_with_output().unwrap()
}

/// Runs `vigil ARGS` with these environment variables set.
pub fn vigil_with_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vigil"))
        .args(args)
        .envs(env.iter().copied())
        .env_remove("VIGIL_DATABASE")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// An empty directory for one test, unique to this process.
/// A licence with `body` signed with the repository's test key, written
/// in `dir`; `None` (and a note) when this build does not trust that key.
pub fn signed_licence(dir: &std::path::Path, body: &str) -> Option<PathBuf> {
    if !cfg!(feature = "test-licence-key") {
        eprintln!("skipped: built without the test-licence-key feature (the test command uses --all-features)");
        return None;
    }
    let key = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("supervisor/tests/fixtures/licence/test-signing.key");
    std::fs::write(dir.join("body.toml"), body).unwrap();
    let signed = vigil_with_input(
        &["license", "sign", "--key", key.to_str().unwrap(), dir.join("body.toml").to_str().unwrap()],
        None,
    );
    assert!(signed.status.success(), "{}", stderr(&signed));
    let licence = dir.join("licence.toml");
    std::fs::write(&licence, &signed.stdout).unwrap();
    Some(licence)
}

/// A fresh scratch directory for the test `tag`, `vigil-e2e-TAG-PID` under
/// the system temp directory. It is left behind for a look after a failure;
/// the next run of the same test removes those of processes that have
/// ended, so runs do not pile up (a CI machine's disk is small).
pub fn temp_dir(tag: &str) -> PathBuf {
    let prefix = format!("vigil-e2e-{tag}-");
    let root = std::env::temp_dir();
    for entry in std::fs::read_dir(&root).into_iter().flatten().flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.strip_prefix(&prefix)) else { continue };
        // Only this tag's (the rest is all digits), of a process now gone.
        let gone = !pid.is_empty()
            && pid.bytes().all(|b| b.is_ascii_digit())
            && !std::path::Path::new("/proc").join(pid).exists();
        if gone && std::path::Path::new("/proc/self").exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
    let dir = root.join(format!("{prefix}{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Standard error as text.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Starts `cmd` with its stdout piped and returns the child and its stdout
/// lines as they come (standard error is passed through).
pub fn spawn_with_lines(cmd: &mut Command) -> (Child, mpsc::Receiver<String>) {
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().unwrap();
    let (tx, lines) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        // Our own binary's few status lines.
        #[allow(clippy::disallowed_methods)]
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    (child, lines)
}
