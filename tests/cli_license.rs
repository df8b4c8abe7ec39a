//! End to end: `vigil license keygen|sign|verify|simulate` on the real binary.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Output;

mod common;

use common::{stderr, temp_dir};

fn vigil(args: &[&str]) -> Output {
    common::vigil_with_input(args, None)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

const BODY: &str = "customer = \"Acme Corp\"\nlicensed_eps = 5000\ndevice_limit = 250\nissued = \"2026-11-01\"\nexpires = \"2027-10-31\"\n";

#[test]
fn keygen_sign_verify_and_every_failure_reason() {
    let dir = temp_dir("flow");
    let out = vigil(&["license", "keygen", "--out", s(&dir)]);
    assert!(out.status.success(), "{}", stderr(&out));
    let (key, public) = (dir.join("licence-signing.key"), dir.join("licence-signing.pub"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
    }
    // Refuses to overwrite a key.
    assert_eq!(vigil(&["license", "keygen", "--out", s(&dir)]).status.code(), Some(2));

    std::fs::write(dir.join("body.toml"), BODY).unwrap();
    let signed = vigil(&["license", "sign", "--key", s(&key), s(&dir.join("body.toml"))]);
    assert!(signed.status.success(), "{}", stderr(&signed));
    let licence = dir.join("acme.licence");
    std::fs::write(&licence, &signed.stdout).unwrap();

    let ok = vigil(&["license", "verify", "--pubkey", s(&public), "--today", "2026-11-22", s(&licence)]);
    assert!(ok.status.success(), "{}", stderr(&ok));
    assert!(String::from_utf8_lossy(&ok.stdout).starts_with("valid: Acme Corp - 5000 EPS, 250 devices"));

    let fail = |args: &[&str]| {
        let o = vigil(args);
        assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
        let e = stderr(&o);
        assert_eq!(e.lines().count(), 1, "not one line: {e}");
        e
    };
    // Expired.
    let e = fail(&["license", "verify", "--pubkey", s(&public), "--today", "2027-11-01", s(&licence)]);
    assert!(e.contains("licence expired on 2027-10-31"), "{e}");
    // Wrong key: the built-in keys did not sign it.
    let e = fail(&["license", "verify", "--today", "2026-11-22", s(&licence)]);
    assert!(e.contains("which this build does not trust"), "{e}");
    // Bad signature: an edited licence.
    let edited = dir.join("edited.licence");
    std::fs::write(&edited, String::from_utf8_lossy(&signed.stdout).replace("5000", "50000")).unwrap();
    let e = fail(&["license", "verify", "--pubkey", s(&public), "--today", "2026-11-22", s(&edited)]);
    assert!(e.contains("bad signature"), "{e}");
    // Malformed, naming the field.
    let broken = dir.join("broken.licence");
    std::fs::write(&broken, String::from_utf8_lossy(&signed.stdout).replace("device_limit = 250\n", "")).unwrap();
    let e = fail(&["license", "verify", "--pubkey", s(&public), "--today", "2026-11-22", s(&broken)]);
    assert!(e.contains("malformed licence") && e.contains("device_limit"), "{e}");
    // A body with a bad field is refused at signing, naming it.
    std::fs::write(dir.join("bad-body.toml"), BODY.replace("5000", "-5")).unwrap();
    let o = vigil(&["license", "sign", "--key", s(&key), s(&dir.join("bad-body.toml"))]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("licensed_eps"), "{}", stderr(&o));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Issue 11, defect 9: bytes after the signature line (a trailing space,
/// blank lines, a comment), CRLF line ends or a missing final line feed
/// used to verify. What `sign` writes verifies; any such change fails with
/// one line saying what was changed.
#[test]
fn bytes_after_the_signature_line_are_not_covered() {
    let dir = temp_dir("tail");
    let out = vigil(&["license", "keygen", "--out", s(&dir)]);
    assert!(out.status.success(), "{}", stderr(&out));
    let (key, public) = (dir.join("licence-signing.key"), dir.join("licence-signing.pub"));
    std::fs::write(dir.join("body.toml"), BODY).unwrap();
    let signed = vigil(&["license", "sign", "--key", s(&key), s(&dir.join("body.toml"))]);
    assert!(signed.status.success(), "{}", stderr(&signed));
    let licence = String::from_utf8(signed.stdout).unwrap();
    assert!(licence.ends_with("\"\n"), "the signer ends the file with one line feed: {licence:?}");
    let verify = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        vigil(&["license", "verify", "--pubkey", s(&public), "--today", "2026-11-22", s(&path)])
    };
    let ok = verify("as-signed.licence", &licence);
    assert!(ok.status.success(), "{}", stderr(&ok));
    let cut = licence.trim_end_matches('\n');
    for (name, text, why) in [
        ("space", format!("{licence} "), "1 byte after the signature line"),
        ("blank", format!("{licence}\n\n"), "2 bytes after the signature line"),
        ("comment", format!("{licence}# issued by hand\n"), "after the signature line"),
        ("crlf", licence.replace('\n', "\r\n"), "CRLF line ends"),
        ("no-final-newline", cut.to_owned(), "line feed after the signature line is missing"),
    ] {
        let o = verify(&format!("{name}.licence"), &text);
        assert_eq!(o.status.code(), Some(1), "{name}: {}", stderr(&o));
        let e = stderr(&o);
        assert_eq!(e.lines().count(), 1, "{name}: not one line: {e}");
        assert!(e.contains("altered licence") && e.contains(why), "{name}: {e}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_test_key_is_trusted_only_in_test_builds() {
    // The test command builds with `--all-features`, which trusts the
    // repository's test key; a default build does not (see the licence
    // module's unit tests and the feature's definition).
    let dir = temp_dir("builtin");
    let key = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("supervisor/tests/fixtures/licence/test-signing.key");
    std::fs::write(dir.join("body.toml"), BODY).unwrap();
    let signed = vigil(&["license", "sign", "--key", s(&key), s(&dir.join("body.toml"))]);
    assert!(signed.status.success(), "{}", stderr(&signed));
    std::fs::write(dir.join("l"), &signed.stdout).unwrap();
    let o = vigil(&["license", "verify", "--today", "2026-11-22", s(&dir.join("l"))]);
    if cfg!(feature = "test-licence-key") {
        assert!(o.status.success(), "{}", stderr(&o));
    } else {
        assert_eq!(o.status.code(), Some(1));
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn simulate_writes_the_three_outputs() {
    let dir = temp_dir("sim");
    let scenario = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/steady.toml");
    let o = vigil(&["license", "simulate", "--scenario", s(&scenario), "--out", s(&dir)]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("3360 intervals x 4 nodes simulated"));
    for f in ["intervals.csv", "summary.json", "chart.svg"] {
        assert!(dir.join(f).metadata().unwrap().len() > 100, "{f}");
    }
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "licensed_eps = 100\ndays = 1\nnodez = 3\n").unwrap();
    let o = vigil(&["license", "simulate", "--scenario", s(&bad), "--out", s(&dir)]);
    assert_eq!(o.status.code(), Some(2));
    let e = stderr(&o);
    assert!(e.contains("bad.toml:3: unknown field `nodez`"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}
