//! Sealing connector secrets at rest. The key lives outside the database (an
//! environment variable or a 0600 file in the data directory), so a database dump or
//! backup alone does not reveal webhook keys, Slack URLs or SMTP passwords.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_PAD_INDIFFERENT, URL_SAFE_PAD_INDIFFERENT};
use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};

use crate::bounded::read_limited;
use crate::{ConnectorError, Secrets};

/// Binds sealed values to their purpose: a value sealed for something else under the
/// same key will not open as connector secrets.
const AAD: &[u8] = b"vigil connector secrets v1";
const PREFIX: &str = "v1:";
/// Sealed values are small JSON documents; anything bigger is not ours.
const MAX_SEALED: usize = 256 * 1024;

/// Secrets sealed with ChaCha20-Poly1305 (ring) under a 32-byte key kept outside the database.
pub struct SecretBox {
    key: [u8; 32],
    rng: SystemRandom,
}

impl std::fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretBox(<redacted>)")
    }
}

impl SecretBox {
    /// The environment variable holding the key: base64 (standard or URL-safe) of 32
    /// bytes; takes precedence over the file.
    pub const ENV: &'static str = "VIGIL_CONNECTOR_KEY";
    /// The key file in the data directory, created 0600 with 32 random bytes (base64
    /// text) when missing.
    pub const FILE: &'static str = "connectors.key";

    /// Loads the key from [`SecretBox::ENV`], else from [`SecretBox::FILE`] in `data_dir`,
    /// creating the file when missing. A key file readable by group or others is refused.
    pub fn load_or_create(data_dir: &Path) -> Result<SecretBox, ConnectorError> {
        load(data_dir, std::env::var(Self::ENV).ok())
    }

    /// A box with this key (tests, tools).
    pub fn from_key(key: &[u8; 32]) -> SecretBox {
        SecretBox { key: *key, rng: SystemRandom::new() }
    }

    fn aead(&self) -> Result<LessSafeKey, ConnectorError> {
        // Only fails for a wrong key length, which the array type rules out.
        UnboundKey::new(&CHACHA20_POLY1305, &self.key)
            .map(LessSafeKey::new)
            .map_err(|_| ConnectorError::Key("unusable key".into()))
    }

    /// Seals `secrets`: `"v1:" + base64(nonce || ciphertext+tag)` of their JSON.
    pub fn seal(&self, secrets: &Secrets) -> Result<String, ConnectorError> {
        let mut data = serde_json::to_vec(secrets).map_err(|e| ConnectorError::Io(format!("encode secrets: {e}")))?;
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill(&mut nonce).map_err(|_| ConnectorError::Key("no random numbers available".into()))?;
        self.aead()?
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(AAD), &mut data)
            .map_err(|_| ConnectorError::Key("cannot seal secrets".into()))?;
        let mut out = Vec::with_capacity(NONCE_LEN + data.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&data);
        Ok(format!("{PREFIX}{}", STANDARD.encode(out)))
    }

    /// Opens a value from [`SecretBox::seal`]. A wrong key or a changed value is a
    /// [`ConnectorError::Key`] error.
    pub fn open(&self, sealed: &str) -> Result<Secrets, ConnectorError> {
        let Some(b64) = sealed.strip_prefix(PREFIX) else {
            return Err(ConnectorError::Key("sealed secrets have an unknown format (expected \"v1:\")".into()));
        };
        if b64.len() > MAX_SEALED {
            return Err(ConnectorError::Key("sealed secrets are too large".into()));
        }
        let mut raw =
            STANDARD.decode(b64).map_err(|_| ConnectorError::Key("sealed secrets are not valid base64".into()))?;
        if raw.len() < NONCE_LEN + CHACHA20_POLY1305.tag_len() {
            return Err(ConnectorError::Key("sealed secrets are truncated".into()));
        }
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&raw[..NONCE_LEN]);
        let plain = self
            .aead()?
            .open_in_place(Nonce::assume_unique_for_key(nonce), Aad::from(AAD), &mut raw[NONCE_LEN..])
            .map_err(|_| {
                ConnectorError::Key(format!(
                    "cannot open sealed secrets: the key ({} or {}) is not the one they were sealed with, \
                     or the stored value was altered",
                    Self::ENV,
                    Self::FILE
                ))
            })?;
        serde_json::from_slice(plain).map_err(|e| ConnectorError::Key(format!("sealed secrets do not decode: {e}")))
    }
}

/// Decodes a base64 key (standard or URL-safe, padding optional) of exactly 32 bytes.
fn decode_key(text: &str, source: &str) -> Result<[u8; 32], ConnectorError> {
    let text = text.trim();
    let bytes = STANDARD_PAD_INDIFFERENT
        .decode(text)
        .or_else(|_| URL_SAFE_PAD_INDIFFERENT.decode(text))
        .map_err(|_| ConnectorError::Key(format!("{source} is not base64")))?;
    bytes.try_into().map_err(|b: Vec<u8>| {
        ConnectorError::Key(format!("{source} must be base64 of 32 bytes, it decodes to {} bytes", b.len()))
    })
}

/// [`SecretBox::load_or_create`] with the environment value passed in (testable
/// without touching the process environment).
pub(crate) fn load(data_dir: &Path, env: Option<String>) -> Result<SecretBox, ConnectorError> {
    if let Some(v) = env.filter(|v| !v.trim().is_empty()) {
        return Ok(SecretBox::from_key(&decode_key(&v, SecretBox::ENV)?));
    }
    let path = data_dir.join(SecretBox::FILE);
    let shown = path.display();
    match std::fs::OpenOptions::new().read(true).open(&path) {
        Ok(mut f) => {
            let mode = f.metadata().map_err(|e| ConnectorError::Key(format!("{shown}: {e}")))?.permissions().mode();
            if mode & 0o077 != 0 {
                return Err(ConnectorError::Key(format!(
                    "{shown} is readable by group or others (mode {:03o}); run: chmod 600 {shown}",
                    mode & 0o777
                )));
            }
            // A key file is 44 bytes of base64 (plus a newline); anything much longer is not a key.
            let raw = read_limited(&mut f, 4096).map_err(|e| ConnectorError::Key(format!("{shown}: {e}")))?;
            let text =
                String::from_utf8(raw).map_err(|_| ConnectorError::Key(format!("{shown} is not base64 text")))?;
            Ok(SecretBox::from_key(&decode_key(&text, &shown.to_string())?))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => create(&path),
        Err(e) => Err(ConnectorError::Key(format!("{shown}: {e}"))),
    }
}

fn create(path: &Path) -> Result<SecretBox, ConnectorError> {
    let shown = path.display();
    let mut key = [0u8; 32];
    SystemRandom::new().fill(&mut key).map_err(|_| ConnectorError::Key("no random numbers available".into()))?;
    // create_new: if another process created it meanwhile, fail rather than overwrite
    // the key that already sealed its secrets.
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| ConnectorError::Key(format!("cannot create {shown}: {e}")))?;
    f.write_all(format!("{}\n", STANDARD.encode(key)).as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| ConnectorError::Key(format!("cannot write {shown}: {e}")))?;
    Ok(SecretBox::from_key(&key))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tempdir(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("vigil-connectors-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn sample() -> Secrets {
        Secrets { url: Some("https://hooks.example.com/T/B/secret".into()), secret: Some("hunter2".into()) }
    }

    #[test]
    fn round_trip_and_nonce_varies() {
        let b = SecretBox::from_key(&[7; 32]);
        let a = b.seal(&sample()).unwrap();
        let c = b.seal(&sample()).unwrap();
        assert!(a.starts_with("v1:"));
        assert_ne!(a, c, "a fresh nonce per seal");
        assert!(!a.contains("hunter2"));
        assert_eq!(b.open(&a).unwrap(), sample());
    }

    #[test]
    fn wrong_key_and_tampering_fail() {
        let sealed = SecretBox::from_key(&[1; 32]).seal(&sample()).unwrap();
        let err = SecretBox::from_key(&[2; 32]).open(&sealed).unwrap_err();
        assert!(matches!(err, ConnectorError::Key(ref m) if m.contains("not the one they were sealed with")), "{err}");
        let b = SecretBox::from_key(&[1; 32]);
        let mut raw = STANDARD.decode(&sealed[3..]).unwrap();
        let last = raw.len() - 1;
        raw[last] ^= 1;
        let tampered = format!("v1:{}", STANDARD.encode(&raw));
        assert!(matches!(b.open(&tampered), Err(ConnectorError::Key(_))));
        assert!(matches!(b.open("v2:abc"), Err(ConnectorError::Key(_))));
        assert!(matches!(b.open("v1:!!"), Err(ConnectorError::Key(_))));
        assert!(matches!(b.open("v1:AAAA"), Err(ConnectorError::Key(_))));
    }

    #[test]
    fn debug_is_redacted() {
        assert_eq!(format!("{:?}", SecretBox::from_key(&[9; 32])), "SecretBox(<redacted>)");
    }

    #[test]
    fn file_created_0600_and_reused() {
        let d = tempdir("create");
        let a = load(&d, None).unwrap();
        let path = d.join(SecretBox::FILE);
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let sealed = a.seal(&sample()).unwrap();
        let b = load(&d, None).unwrap();
        assert_eq!(b.open(&sealed).unwrap(), sample());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn group_readable_file_refused() {
        let d = tempdir("perm");
        load(&d, None).unwrap();
        let path = d.join(SecretBox::FILE);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let err = load(&d, None).unwrap_err().to_string();
        assert!(err.contains("chmod 600"), "{err}");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn env_key_takes_precedence() {
        let d = tempdir("env");
        let from_file = load(&d, None).unwrap();
        let key = [42u8; 32];
        let env_std = STANDARD.encode(key);
        let env_url = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key);
        let sealed = SecretBox::from_key(&key).seal(&sample()).unwrap();
        assert_eq!(load(&d, Some(env_std)).unwrap().open(&sealed).unwrap(), sample());
        assert_eq!(load(&d, Some(env_url)).unwrap().open(&sealed).unwrap(), sample());
        assert!(from_file.open(&sealed).is_err());
        assert!(load(&d, Some("c2hvcnQ=".into())).unwrap_err().to_string().contains("32 bytes"));
        std::fs::remove_dir_all(&d).unwrap();
    }
}
