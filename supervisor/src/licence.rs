//! Licences (SPEC §3): licensed EPS, device limit and validity dates,
//! signed with Ed25519 by the vendor.
//!
//! A licence file is TOML written by `vigil license sign`: the body fields
//! in a fixed order, the signing key's id, and last a `signature` line,
//! `signature = "<base64>"` and one line feed. The signature covers every
//! byte before that line, exactly as written, and the signature line must
//! be exactly what `sign` writes and the end of the file, so changing,
//! adding or removing any byte anywhere (a digit, a trailing space, a
//! comment or blank line after the signature, CRLF line ends, the final
//! line feed) makes the licence fail, and a licence cannot be forged by
//! editing configuration.
//!
//! The public key that verifies licences is compiled into the binary; its
//! private key is the vendor's and is not in this repository. With the
//! `test-licence-key` feature (tests and benchmarks only) the repository's
//! test key is trusted as well.
//!
//! A missing or invalid licence is never fatal: the system runs on an
//! unlicensed allowance of [`UNLICENSED_EPS`] and says why
//! ([`LicenceStatus`]).

use std::fmt;
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use jiff::civil::Date;
use ring::rand::SystemRandom;
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use serde::{Deserialize, Serialize};

/// EPS allowed without a valid licence.
pub const UNLICENSED_EPS: u64 = 500;

/// The `format` field of licence files this build writes and reads.
pub const FORMAT: &str = "vigil-licence-1";

/// The vendor's licence-verification key (Ed25519, base64).
const VENDOR_PUBLIC_KEY: &str = include_str!("../keys/vendor-licence.pub");

/// The repository's test key, trusted only in test builds.
#[cfg(feature = "test-licence-key")]
const TEST_PUBLIC_KEY: &str = include_str!("../tests/fixtures/licence/test-signing.pub");

/// Why a licence (or key) is not usable, as one line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LicenceError {
    /// The file is not a licence: a field is missing, unknown or mistyped.
    #[error("malformed licence: {0}")]
    Malformed(String),
    /// Signed with a key this build does not trust.
    #[error("licence signed with key {key_id}, which this build does not trust (trusted: {trusted})")]
    WrongKey {
        /// The licence's key id.
        key_id: String,
        /// Ids of the trusted keys.
        trusted: String,
    },
    /// The signature does not match the content.
    #[error("bad signature: the licence was changed after it was signed")]
    BadSignature,
    /// The file is not byte for byte what `vigil license sign` wrote, in a
    /// part the signature cannot vouch for: its signature line or after.
    #[error("altered licence: {0}")]
    Altered(String),
    /// Past its expiry date.
    #[error("licence expired on {0}")]
    Expired(Date),
    /// Before its issue date.
    #[error("licence not valid before {0}")]
    NotYetValid(Date),
    /// A key file that cannot be used.
    #[error("bad key: {0}")]
    BadKey(String),
}

/// A public key that verifies licences.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey {
    bytes: Vec<u8>,
    id: String,
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.id)
    }
}

impl PublicKey {
    /// Parses a public key file: base64 of the 32-byte key, `#` comments.
    pub fn parse(text: &str) -> Result<PublicKey, LicenceError> {
        let bytes = decode_key_text(text)?;
        if bytes.len() != 32 {
            return Err(LicenceError::BadKey(format!(
                "an Ed25519 public key is 32 bytes, this one is {}",
                bytes.len()
            )));
        }
        Ok(PublicKey { id: key_id(&bytes), bytes })
    }

    /// The key id written into licences: 16 hex digits of its SHA-256.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The key file text.
    pub fn to_file_text(&self) -> String {
        format!("# vigil licence verification key (Ed25519), id {}\n{}\n", self.id, BASE64.encode(&self.bytes))
    }
}

/// A private key that signs licences. `Debug` does not show it.
pub struct SigningKey {
    pair: Ed25519KeyPair,
    pkcs8: Vec<u8>,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningKey(id {}, secret hidden)", self.public().id)
    }
}

impl SigningKey {
    /// A new random key.
    pub fn generate() -> Result<SigningKey, LicenceError> {
        let rng = SystemRandom::new();
        let doc =
            Ed25519KeyPair::generate_pkcs8(&rng).map_err(|_| LicenceError::BadKey("key generation failed".into()))?;
        SigningKey::from_pkcs8(doc.as_ref())
    }

    fn from_pkcs8(pkcs8: &[u8]) -> Result<SigningKey, LicenceError> {
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8)
            .map_err(|e| LicenceError::BadKey(format!("not an Ed25519 PKCS#8 key ({e})")))?;
        Ok(SigningKey { pair, pkcs8: pkcs8.to_vec() })
    }

    /// Parses a private key file (base64 PKCS#8, `#` comments).
    pub fn parse(text: &str) -> Result<SigningKey, LicenceError> {
        SigningKey::from_pkcs8(&decode_key_text(text)?)
    }

    /// The matching public key.
    pub fn public(&self) -> PublicKey {
        let bytes = self.pair.public_key().as_ref().to_vec();
        PublicKey { id: key_id(&bytes), bytes }
    }

    /// The key file text.
    pub fn to_file_text(&self) -> String {
        format!(
            "# vigil licence SIGNING key (Ed25519, PKCS#8), id {}. Keep it secret: whoever has it can issue licences.\n{}\n",
            self.public().id,
            BASE64.encode(&self.pkcs8)
        )
    }
}

fn decode_key_text(text: &str) -> Result<Vec<u8>, LicenceError> {
    let b64: String = text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).collect();
    BASE64.decode(b64.as_bytes()).map_err(|e| LicenceError::BadKey(format!("not base64 ({e})")))
}

fn key_id(public: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, public);
    digest.as_ref()[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// The keys this build trusts: the vendor's, and with the
/// `test-licence-key` feature the repository's test key.
pub fn trusted_keys() -> Vec<PublicKey> {
    let mut keys = Vec::new();
    if let Ok(k) = PublicKey::parse(VENDOR_PUBLIC_KEY) {
        keys.push(k);
    }
    #[cfg(feature = "test-licence-key")]
    if let Ok(k) = PublicKey::parse(TEST_PUBLIC_KEY) {
        keys.push(k);
    }
    keys
}

/// The fields a licence grants, as given to `vigil license sign`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LicenceBody {
    /// Who the licence is for.
    pub customer: String,
    /// Licensed EPS (L).
    pub licensed_eps: u64,
    /// Most devices (log sources) allowed.
    pub device_limit: u64,
    /// First valid day, `YYYY-MM-DD`.
    pub issued: String,
    /// Last valid day, `YYYY-MM-DD`.
    pub expires: String,
}

/// The signed part of a licence file, in its canonical field order.
#[derive(Serialize)]
struct SignedFields {
    format: String,
    customer: String,
    licensed_eps: u64,
    device_limit: u64,
    issued: String,
    expires: String,
    key_id: String,
}

/// A whole licence file. (Not `SignedFields` flattened: serde cannot deny
/// unknown fields through `flatten`.)
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LicenceFile {
    format: String,
    customer: String,
    licensed_eps: u64,
    device_limit: u64,
    issued: String,
    expires: String,
    key_id: String,
    signature: String,
}

/// A verified licence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Licence {
    /// Who it is for.
    pub customer: String,
    /// Licensed EPS.
    pub licensed_eps: u64,
    /// Most devices.
    pub device_limit: u64,
    /// First valid day.
    pub issued: Date,
    /// Last valid day.
    pub expires: Date,
    /// Id of the key that signed it.
    pub key_id: String,
}

fn check_body(
    customer: &str,
    licensed_eps: u64,
    device_limit: u64,
    issued: &str,
    expires: &str,
) -> Result<(Date, Date), LicenceError> {
    let malformed = |field: &str, why: &str| LicenceError::Malformed(format!("field `{field}`: {why}"));
    if customer.trim().is_empty() || customer.chars().any(char::is_control) {
        return Err(malformed("customer", "must be a non-empty name without control characters"));
    }
    if licensed_eps == 0 {
        return Err(malformed("licensed_eps", "must be a positive number of events per second"));
    }
    if device_limit == 0 {
        return Err(malformed("device_limit", "must be a positive number of devices"));
    }
    let date = |field: &str, text: &str| {
        text.parse::<Date>().map_err(|_| malformed(field, &format!("{text:?} is not a date (YYYY-MM-DD)")))
    };
    let (issued, expires) = (date("issued", issued)?, date("expires", expires)?);
    if expires < issued {
        return Err(malformed("expires", "is before `issued`"));
    }
    Ok((issued, expires))
}

/// Signs a licence body (TOML with `customer`, `licensed_eps`,
/// `device_limit`, `issued`, `expires`) and returns the licence file text.
pub fn sign(body_toml: &str, key: &SigningKey) -> Result<String, LicenceError> {
    let body: LicenceBody =
        toml::from_str(body_toml).map_err(|e| LicenceError::Malformed(toml_problem(body_toml, &e)))?;
    check_body(&body.customer, body.licensed_eps, body.device_limit, &body.issued, &body.expires)?;
    let fields = SignedFields {
        format: FORMAT.to_owned(),
        customer: body.customer,
        licensed_eps: body.licensed_eps,
        device_limit: body.device_limit,
        issued: body.issued,
        expires: body.expires,
        key_id: key.public().id,
    };
    let signed = toml::to_string(&fields).map_err(|e| LicenceError::Malformed(e.to_string()))?;
    let signature = key.pair.sign(signed.as_bytes());
    Ok(format!("{signed}signature = \"{}\"\n", BASE64.encode(signature.as_ref())))
}

/// Verifies a licence file against `keys` on day `today`.
pub fn verify(text: &str, keys: &[PublicKey], today: Date) -> Result<Licence, LicenceError> {
    let f: LicenceFile = toml::from_str(text).map_err(|e| LicenceError::Malformed(toml_problem(text, &e)))?;
    if f.format != FORMAT {
        return Err(LicenceError::Malformed(format!("field `format`: {:?} is not {FORMAT:?}", f.format)));
    }
    let (issued, expires) = check_body(&f.customer, f.licensed_eps, f.device_limit, &f.issued, &f.expires)?;
    let Some(key) = keys.iter().find(|k| k.id == f.key_id) else {
        let trusted: Vec<&str> = keys.iter().map(|k| k.id.as_str()).collect();
        return Err(LicenceError::WrongKey { key_id: f.key_id, trusted: trusted.join(", ") });
    };
    if text.contains('\r') {
        return Err(LicenceError::Altered(
            "it has CRLF line ends; a licence is verified byte for byte, as signed, with LF line ends".into(),
        ));
    }
    // The signature covers every byte before the signature line; the line
    // itself must be the one `sign` writes, and nothing may follow it.
    let signed = text
        .rfind("\nsignature = ")
        .map(|i| &text[..=i])
        .ok_or_else(|| LicenceError::Malformed("field `signature` must be the last line".into()))?;
    let signature = BASE64.decode(f.signature.as_bytes()).map_err(|_| LicenceError::BadSignature)?;
    check_signature_line(&text[signed.len()..], &signature)?;
    UnparsedPublicKey::new(&ED25519, &key.bytes)
        .verify(signed.as_bytes(), &signature)
        .map_err(|_| LicenceError::BadSignature)?;
    if today > expires {
        return Err(LicenceError::Expired(expires));
    }
    if today < issued {
        return Err(LicenceError::NotYetValid(issued));
    }
    Ok(Licence {
        customer: f.customer,
        licensed_eps: f.licensed_eps,
        device_limit: f.device_limit,
        issued,
        expires,
        key_id: f.key_id,
    })
}

/// The signature line as `sign` writes it.
fn signature_line(signature: &[u8]) -> String {
    format!("signature = \"{}\"\n", BASE64.encode(signature))
}

/// Fails unless `rest` (the file from its signature line on) is exactly
/// the signature line `sign` writes for `signature`.
fn check_signature_line(rest: &str, signature: &[u8]) -> Result<(), LicenceError> {
    let expected = signature_line(signature);
    if rest == expected {
        return Ok(());
    }
    let altered = |why: &str| Err(LicenceError::Altered(why.to_owned()));
    match rest.strip_prefix(expected.trim_end_matches('\n')) {
        Some("") => altered("the line feed after the signature line is missing; the licence ends with it"),
        Some(after) if after.starts_with('\n') => {
            let extra = after.len() - 1;
            Err(LicenceError::Altered(format!(
                "{extra} byte{} after the signature line; a licence ends with its signature line",
                if extra == 1 { "" } else { "s" }
            )))
        }
        Some(_) => {
            altered("the signature line has bytes after the signature; it must end right after the closing quote")
        }
        None => altered("the signature line is not written as `vigil license sign` writes it"),
    }
}

/// "line N: message (field `x`)" for a TOML error, naming the field the
/// error points at when the message does not.
pub(crate) fn toml_problem(text: &str, err: &toml::de::Error) -> String {
    let message = err.message().trim().to_owned();
    let Some(span) = err.span() else { return message };
    let start = span.start.min(text.len());
    let line_no = text[..start].bytes().filter(|b| *b == b'\n').count() + 1;
    let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
    let line = text[line_start..].lines().next().unwrap_or("");
    let field = line.split_once('=').map(|(k, _)| k.trim()).filter(|k| !k.is_empty() && !k.starts_with('['));
    match field {
        Some(field) if !message.contains(field) => format!("line {line_no}: field `{field}`: {message}"),
        _ => format!("line {line_no}: {message}"),
    }
}

/// The licence in effect: a verified licence, or the unlicensed allowance
/// and the reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LicenceStatus {
    /// A valid licence.
    Licensed(Licence),
    /// Running on [`UNLICENSED_EPS`].
    Unlicensed {
        /// Why (no file given, or what is wrong with it).
        reason: String,
    },
}

impl LicenceStatus {
    /// Reads and verifies the licence at `path` (none: unlicensed). Never
    /// fails: every problem becomes the reason for running unlicensed.
    pub fn load(path: Option<&Path>, keys: &[PublicKey], today: Date) -> LicenceStatus {
        let Some(path) = path else {
            return LicenceStatus::Unlicensed { reason: "no licence file given".into() };
        };
        let text = match read_small_file(path) {
            Ok(t) => t,
            Err(e) => return LicenceStatus::Unlicensed { reason: format!("cannot read {}: {e}", path.display()) },
        };
        match verify(&text, keys, today) {
            Ok(l) => LicenceStatus::Licensed(l),
            Err(e) => LicenceStatus::Unlicensed { reason: format!("{}: {e}", path.display()) },
        }
    }

    /// The EPS in effect (L).
    pub fn licensed_eps(&self) -> u64 {
        match self {
            LicenceStatus::Licensed(l) => l.licensed_eps,
            LicenceStatus::Unlicensed { .. } => UNLICENSED_EPS,
        }
    }

    /// The licence's device limit; running unlicensed, devices are
    /// counted but not limited.
    pub fn device_limit(&self) -> Option<u64> {
        match self {
            LicenceStatus::Licensed(l) => Some(l.device_limit),
            LicenceStatus::Unlicensed { .. } => None,
        }
    }

    /// One line for the start-up banner.
    pub fn describe(&self) -> String {
        match self {
            LicenceStatus::Licensed(l) => format!(
                "licensed to {}: {} EPS, {} devices, valid until {} (key {})",
                l.customer, l.licensed_eps, l.device_limit, l.expires, l.key_id
            ),
            LicenceStatus::Unlicensed { reason } => {
                format!("UNLICENSED: running on the {UNLICENSED_EPS} EPS allowance ({reason})")
            }
        }
    }
}

/// Reads a configuration-sized file (at most 1 MiB).
pub(crate) fn read_small_file(path: &Path) -> std::io::Result<String> {
    use std::io::Read;
    let mut text = String::new();
    #[allow(clippy::disallowed_methods)] // bounded by `take`
    std::fs::File::open(path)?.take(1024 * 1024).read_to_string(&mut text)?;
    Ok(text)
}

/// A date from an instant (UTC).
pub fn date_of(t: parsers::EventTime) -> Date {
    let c = t.civil();
    Date::new(i16::try_from(c.year).unwrap_or(9999), c.month as i8, c.day as i8).unwrap_or(Date::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &str = "customer = \"Acme \\\"Corp\\\"\"\nlicensed_eps = 5000\ndevice_limit = 200\nissued = \"2026-11-01\"\nexpires = \"2027-10-31\"\n";

    fn day(s: &str) -> Date {
        s.parse().unwrap()
    }

    #[test]
    fn sign_then_verify() {
        let key = SigningKey::generate().unwrap();
        let licence = sign(BODY, &key).unwrap();
        let l = verify(&licence, &[key.public()], day("2026-11-22")).unwrap();
        assert_eq!(l.customer, "Acme \"Corp\"");
        assert_eq!((l.licensed_eps, l.device_limit), (5000, 200));
        assert_eq!(l.key_id, key.public().id());
        assert!(licence.ends_with("\"\n") && licence.contains("\nsignature = \""));
    }

    #[test]
    fn every_failure_has_its_reason() {
        let key = SigningKey::generate().unwrap();
        let other = SigningKey::generate().unwrap();
        let licence = sign(BODY, &key).unwrap();
        assert_eq!(verify(&licence, &[key.public()], day("2027-11-01")), Err(LicenceError::Expired(day("2027-10-31"))));
        assert_eq!(
            verify(&licence, &[key.public()], day("2026-10-01")),
            Err(LicenceError::NotYetValid(day("2026-11-01")))
        );
        assert!(matches!(verify(&licence, &[other.public()], day("2026-11-22")), Err(LicenceError::WrongKey { .. })));
        let edited = licence.replace("licensed_eps = 5000", "licensed_eps = 9000");
        assert_eq!(verify(&edited, &[key.public()], day("2026-11-22")), Err(LicenceError::BadSignature));
        let e = verify(
            &licence.replace("licensed_eps = 5000", "licensed_eps = \"lots\""),
            &[key.public()],
            day("2026-11-22"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("malformed licence: line 3: field `licensed_eps`"), "{e}");
        let e = verify(&licence.replace("device_limit = 200\n", ""), &[key.public()], day("2026-11-22"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("device_limit"), "{e}");
    }

    #[test]
    fn flipping_any_byte_fails() {
        let key = SigningKey::generate().unwrap();
        let licence = sign(BODY, &key).unwrap();
        let today = day("2026-11-22");
        let keys = [key.public()];
        for i in 0..licence.len() {
            for flip in [0x01u8, 0x20, 0x80] {
                let mut bytes = licence.clone().into_bytes();
                bytes[i] ^= flip;
                let Ok(text) = String::from_utf8(bytes) else { continue };
                assert!(verify(&text, &keys, today).is_err(), "byte {i} ^ {flip:#x} still verifies");
            }
        }
    }

    /// Issue 11, defect 9: a trailing space, blank lines or a comment after
    /// the signature line, CRLF line ends or a missing final line feed
    /// used to verify, since the signature covers only the bytes before
    /// its line.
    #[test]
    fn bytes_after_the_signature_line_are_not_covered() {
        let key = SigningKey::generate().unwrap();
        let licence = sign(BODY, &key).unwrap();
        let (keys, today) = ([key.public()], day("2026-11-22"));
        assert!(licence.ends_with("\"\n"), "the signer ends with one line feed");
        assert!(verify(&licence, &keys, today).is_ok());
        let body = licence.trim_end_matches('\n');
        // The opening quote of the signature: the same line as a TOML
        // literal string, which parses to the same signature.
        let quote = body.rfind("signature = \"").unwrap() + "signature = ".len();
        for (altered, why) in [
            (format!("{licence} "), "1 byte after the signature line"),
            (format!("{licence}\n"), "1 byte after the signature line"),
            (format!("{licence}\n\n\n"), "3 bytes after the signature line"),
            (format!("{licence}# a comment\n"), "12 bytes after the signature line"),
            (format!("{body} \n"), "bytes after the signature"),
            (format!("{body} # note\n"), "bytes after the signature"),
            (body.to_owned(), "line feed after the signature line is missing"),
            (licence.replace('\n', "\r\n"), "CRLF line ends"),
            (format!("{body}\r\n"), "CRLF line ends"),
            (licence.replace("signature = \"", "signature =  \""), "not written as"),
            (format!("{}'{}'\n", &body[..quote], &body[quote + 1..body.len() - 1]), "not written as"),
        ] {
            match verify(&altered, &keys, today) {
                Err(e) => assert!(e.to_string().contains(why), "{altered:?}: {e}"),
                Ok(_) => panic!("{altered:?} still verifies"),
            }
        }
    }

    #[test]
    fn body_problems_name_the_field() {
        let key = SigningKey::generate().unwrap();
        let e = sign(
            "customer = \"x\"\nlicensed_eps = 0\ndevice_limit = 1\nissued = \"2026-01-01\"\nexpires = \"2027-01-01\"\n",
            &key,
        )
        .unwrap_err();
        assert!(e.to_string().contains("`licensed_eps`"), "{e}");
        let e = sign(&BODY.replace("expires", "expiry"), &key).unwrap_err().to_string();
        assert!(e.contains("expiry"), "{e}");
        let e = sign(&BODY.replace("2027-10-31", "2027-13-01"), &key).unwrap_err().to_string();
        assert!(e.contains("`expires`"), "{e}");
    }

    #[test]
    fn key_files_round_trip_and_hide_secrets() {
        let key = SigningKey::generate().unwrap();
        let again = SigningKey::parse(&key.to_file_text()).unwrap();
        assert_eq!(again.public(), key.public());
        assert_eq!(PublicKey::parse(&key.public().to_file_text()).unwrap(), key.public());
        assert!(!format!("{key:?}").contains(&BASE64.encode(&key.pkcs8)));
        assert!(PublicKey::parse("AAAA").is_err());
    }

    #[test]
    fn unlicensed_allowance_with_reason() {
        let s = LicenceStatus::load(None, &trusted_keys(), day("2026-11-22"));
        assert_eq!(s.licensed_eps(), UNLICENSED_EPS);
        assert!(s.describe().contains("no licence file"));
        let s = LicenceStatus::load(Some(Path::new("/nonexistent/licence")), &trusted_keys(), day("2026-11-22"));
        assert!(s.describe().contains("cannot read /nonexistent/licence"));
    }

    #[test]
    fn the_vendor_key_is_built_in() {
        assert!(!trusted_keys().is_empty());
    }
}
