//! Node credentials and what each role may do, enforced by nats-server.
//!
//! vigil uses NATS's decentralized authentication rather than a scheme of
//! its own:
//! - an **operator** key signs the accounts; the server trusts only it;
//! - the **VIGIL account** holds every stream and bucket; its JWT lists the
//!   account **signing key** and the revoked users;
//! - each node is a **user** of that account: an nkey of its own, and a JWT
//!   signed by the signing key that names the node, its role, its org
//!   binding and event-id slot (as tags), and the subjects it may publish
//!   and subscribe to ([`permissions`]);
//! - a **system account** user lets the supervisor push a new account JWT
//!   (with a revocation) to the running server, which then disconnects the
//!   revoked node and refuses it from then on.
//!
//! Only the supervisor's key directory holds the private keys (files 0600);
//! a node holds its own `.creds` file and nothing else. Everything here is
//! pure: time comes in as a parameter.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use nkeys::KeyPair;
use parsers::NodeRole;
use serde_json::{Value, json};
use sha2::Digest as _;

use crate::{
    CHECKPOINT_BUCKET, CONTROL_BUCKET, DETECTION_STREAM, DETECTION_SUBJECT_PREFIX, EVENT_STREAM, LEASE_BUCKET,
};

/// The account holding vigil's streams and buckets.
pub const ACCOUNT_NAME: &str = "VIGIL";

const OPERATOR_SEED: &str = "operator.nk";
const ACCOUNT_SEED: &str = "account.nk";
const SIGNING_SEED: &str = "signing.nk";
const SYSTEM_SEED: &str = "system.nk";
/// The supervisor's own credentials in the key directory.
pub const SUPERVISOR_CREDS: &str = "supervisor.creds";
/// The system-account user's credentials in the key directory.
pub const SYSTEM_CREDS: &str = "system.creds";
/// The operator JWT in the key directory (the server's `operator`).
pub const OPERATOR_JWT: &str = "operator.jwt";

/// Why keys or credentials cannot be made, read or used.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// A file of the key directory or a creds file cannot be read or written.
    #[error("{path}: {reason}")]
    File {
        /// The file.
        path: String,
        /// Why.
        reason: std::io::Error,
    },
    /// A key file does not hold a key of the kind expected.
    #[error("{path}: not a NATS {kind} seed ({reason})")]
    BadSeed {
        /// The file.
        path: String,
        /// Operator, account or user.
        kind: &'static str,
        /// What nkeys said.
        reason: String,
    },
    /// A creds file that is not one vigil issued.
    #[error("{path}: {reason}")]
    BadCreds {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// Signing failed (nkeys).
    #[error("cannot sign: {0}")]
    Sign(String),
    /// The server refused an account update.
    #[error("nats-server refused the account update: {0}")]
    Refused(String),
    /// The request to the server failed.
    #[error("cannot push the account to nats-server: {0}")]
    Push(String),
}

fn file_err(path: &Path) -> impl FnOnce(std::io::Error) -> AuthError + '_ {
    move |reason| AuthError::File { path: path.display().to_string(), reason }
}

/// What a node's credentials grant; carried in its user JWT's tags, so the
/// node learns its name, role, org binding and slot from its creds file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    /// The node's name.
    pub node: String,
    /// Its role.
    pub role: NodeRole,
    /// The only org a collector may publish events for (`--org`).
    pub org: Option<u32>,
    /// A collector's event-id slot, given at enrolment.
    pub slot: Option<u16>,
}

/// Subjects a user may publish to and subscribe to.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Permissions {
    /// Publish allow-list (empty with `unrestricted`).
    pub publish: Vec<String>,
    /// Subscribe allow-list.
    pub subscribe: Vec<String>,
    /// No list: everything in the account (the supervisor).
    pub unrestricted: bool,
}

/// The reply-inbox prefix of node `node`: its own, so no node can read
/// another's replies (acknowledgements, KV answers).
pub fn inbox_prefix(node: &str) -> String {
    format!("_INBOX_{node}")
}

/// JetStream API subjects that read stream `stream`: info, direct and
/// message gets.
fn stream_reads(stream: &str) -> Vec<String> {
    vec![
        format!("$JS.API.STREAM.INFO.{stream}"),
        format!("$JS.API.STREAM.MSG.GET.{stream}"),
        format!("$JS.API.DIRECT.GET.{stream}"),
        format!("$JS.API.DIRECT.GET.{stream}.>"),
    ]
}

/// JetStream API subjects to create, read with, acknowledge on and delete
/// consumers of `stream` (create, info, delete, next).
fn stream_consumers(stream: &str) -> Vec<String> {
    vec![
        format!("$JS.API.CONSUMER.*.{stream}"),
        format!("$JS.API.CONSUMER.*.{stream}.>"),
        format!("$JS.API.CONSUMER.MSG.NEXT.{stream}.*"),
        format!("$JS.ACK.{stream}.>"),
        format!("$JS.FC.{stream}.>"),
    ]
}

/// Everything on stream `stream`: create (idempotent), update, purge,
/// reads and consumers.
fn stream_owner(stream: &str) -> Vec<String> {
    let mut s = vec![format!("$JS.API.STREAM.*.{stream}"), format!("$JS.API.STREAM.MSG.*.{stream}")];
    s.extend(stream_reads(stream).into_iter().skip(2));
    s.extend(stream_consumers(stream));
    s
}

/// A control-bucket key's direct get (how `ControlKv::get` reads).
fn control_get(key: &str) -> String {
    format!("$JS.API.DIRECT.GET.KV_{CONTROL_BUCKET}.$KV.{CONTROL_BUCKET}.{key}")
}

/// What role `grant.role` may do on the server (issue 16's matrix):
/// - a **collector** publishes event batches on
///   `vigil.events.<p>.<org>.<node>` with its own node name (and, when
///   bound, its org only), its own reports, device reports and heartbeats;
///   it reads the org table, the settings, the device standings and its own
///   budget, key by key (no consumers: it cannot watch other keys), and
///   nothing else: not the event stream, not checkpoints, not detections;
/// - a **worker** consumes and purges the event stream, owns the lease,
///   commit, presence and checkpoint buckets (ownership moves between
///   workers, so these are the role's; fencing keeps a stale owner's writes
///   out), publishes detections as itself and its heartbeats, and reads
///   the control bucket;
/// - the **supervisor** may do everything in the account: it alone
///   creates the event stream, writes budgets, the org table and node
///   bindings, and consumes detections.
pub fn permissions(grant: &Grant) -> Permissions {
    let node = grant.node.as_str();
    let mut publish = vec!["$JS.API.INFO".to_owned(), crate::heartbeat_subject(node)];
    match grant.role {
        NodeRole::Supervisor => return Permissions { unrestricted: true, ..Permissions::default() },
        NodeRole::Collector => {
            let org = grant.org.map_or_else(|| "*".to_owned(), |o| o.to_string());
            publish.push(format!("{}.*.{org}.{node}", crate::EVENT_SUBJECT_PREFIX));
            publish.push(crate::report_subject(node));
            publish.push(crate::devices_subject(node));
            publish.push(format!("$JS.API.STREAM.INFO.{EVENT_STREAM}"));
            publish.push(format!("$JS.API.STREAM.INFO.KV_{CONTROL_BUCKET}"));
            for key in ["orgs", "settings", crate::DEVICES_KEY, &format!("budget.{node}")] {
                publish.push(control_get(key));
            }
            publish.push(control_get("devices.part.>"));
        }
        NodeRole::Worker => {
            publish.extend(stream_reads(EVENT_STREAM));
            publish.extend(stream_consumers(EVENT_STREAM));
            publish.push(format!("$JS.API.STREAM.PURGE.{EVENT_STREAM}"));
            let kv = |b: &str| format!("KV_{b}");
            for bucket in [LEASE_BUCKET, crate::STORED_BUCKET, crate::WORKERS_BUCKET] {
                publish.extend(stream_owner(&kv(bucket)));
                publish.push(format!("$KV.{bucket}.>"));
            }
            publish.extend(stream_owner(&format!("OBJ_{CHECKPOINT_BUCKET}")));
            publish.push(format!("$O.{CHECKPOINT_BUCKET}.>"));
            publish.extend(stream_reads(&kv(CONTROL_BUCKET)));
            publish.extend(stream_consumers(&kv(CONTROL_BUCKET)));
            publish.push(format!("$JS.API.STREAM.INFO.{DETECTION_STREAM}"));
            publish.push(format!("{DETECTION_SUBJECT_PREFIX}.{node}"));
        }
    }
    Permissions { publish, subscribe: vec![format!("{}.>", inbox_prefix(node))], unrestricted: false }
}

/// A node's credentials: a NATS `.creds` file (user JWT and nkey seed).
#[derive(Clone)]
pub struct Creds {
    /// The user's public key (what a revocation names).
    pub user_key: String,
    text: String,
}

impl Creds {
    /// The file's text (a secret: write it 0600).
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Writes the file, readable by its owner only.
    pub fn write(&self, path: &Path) -> Result<(), AuthError> {
        write_private(path, self.text.as_bytes())
    }
}

impl fmt::Debug for Creds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Creds").field("user_key", &self.user_key).finish_non_exhaustive()
    }
}

/// Writes `bytes` to a new file of mode 0600 (replacing an old one).
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<(), AuthError> {
    use std::io::Write as _;
    let _ = std::fs::remove_file(path);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(file_err(path))?;
    file.write_all(bytes).and_then(|()| file.sync_all()).map_err(file_err(path))
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Signs `claims` (with `iss`, `iat`, `jti` filled in) as a NATS JWT.
fn sign(mut claims: Value, signer: &KeyPair, iat: i64) -> Result<String, AuthError> {
    claims["iss"] = Value::String(signer.public_key());
    claims["iat"] = Value::from(iat);
    claims["jti"] = Value::String(String::new());
    let unsigned = serde_json::to_vec(&claims).map_err(|e| AuthError::Sign(e.to_string()))?;
    let id = sha2::Sha256::digest(&unsigned);
    claims["jti"] = Value::String(data_encoding::BASE32_NOPAD.encode(&id));
    let body = serde_json::to_vec(&claims).map_err(|e| AuthError::Sign(e.to_string()))?;
    let head = b64(br#"{"typ":"JWT","alg":"ed25519-nkey"}"#);
    let signing_input = format!("{head}.{}", b64(&body));
    let signature = signer.sign(signing_input.as_bytes()).map_err(|e| AuthError::Sign(e.to_string()))?;
    Ok(format!("{signing_input}.{}", b64(&signature)))
}

/// The claims of a JWT, unverified (the server verifies; a node only reads
/// its own grant).
pub fn jwt_claims(jwt: &str) -> Option<Value> {
    let body = jwt.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(body.trim_end_matches('=')).ok()?;
    serde_json::from_slice(&bytes).ok()
}

fn creds_text(jwt: &str, seed: &str) -> String {
    format!(
        "-----BEGIN NATS USER JWT-----\n{jwt}\n------END NATS USER JWT------\n\n\
         ************************* IMPORTANT *************************\n\
         NKEY Seed printed below can be used to sign and prove identity.\n\
         NKEYs are sensitive and should be treated as secrets.\n\n\
         -----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n\n\
         *************************************************************\n"
    )
}

/// The JWT of a creds file's text.
fn creds_jwt(text: &str) -> Option<&str> {
    let start = text.find("-----BEGIN NATS USER JWT-----")? + "-----BEGIN NATS USER JWT-----".len();
    let rest = &text[start..];
    let end = rest.find("------END NATS USER JWT------")?;
    Some(rest[..end].trim())
}

/// Reads the grant of creds file `path` (the tags vigil put in it).
pub fn read_grant(path: &Path) -> Result<Grant, AuthError> {
    let text = std::fs::read_to_string(path).map_err(file_err(path))?;
    let bad = |reason: &str| AuthError::BadCreds { path: path.display().to_string(), reason: reason.to_owned() };
    let jwt = creds_jwt(&text).ok_or_else(|| bad("no NATS user JWT in it"))?;
    let claims = jwt_claims(jwt).ok_or_else(|| bad("its JWT cannot be read"))?;
    grant_of(&claims).ok_or_else(|| bad("not issued by `vigil node add` (no vigil role and node in its JWT)"))
}

fn grant_of(claims: &Value) -> Option<Grant> {
    let tags: Vec<&str> = claims["nats"]["tags"].as_array()?.iter().filter_map(Value::as_str).collect();
    let tag = |name: &str| tags.iter().find_map(|t| t.strip_prefix(name).and_then(|t| t.strip_prefix(':')));
    Some(Grant {
        node: tag("vigil-node")?.to_owned(),
        role: NodeRole::parse(tag("vigil-role")?)?,
        org: tag("vigil-org").and_then(|o| o.parse().ok()),
        slot: tag("vigil-slot").and_then(|s| s.parse().ok()),
    })
}

/// The keys of a cluster: operator, account, the account's signing key
/// and the system account. `Debug` shows public keys only.
pub struct ClusterKeys {
    operator: KeyPair,
    account: KeyPair,
    signing: KeyPair,
    system: KeyPair,
}

impl fmt::Debug for ClusterKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterKeys")
            .field("operator", &self.operator.public_key())
            .field("account", &self.account.public_key())
            .field("signing", &self.signing.public_key())
            .field("system", &self.system.public_key())
            .finish()
    }
}

/// What the generated nats-server configuration says beyond the keys.
#[derive(Clone, Debug)]
pub struct ServerSetup {
    /// `listen` (`0.0.0.0:4222`; port -1 picks a free one).
    pub listen: String,
    /// JetStream's store directory.
    pub store_dir: PathBuf,
    /// Directory of the account resolver (account JWTs pushed at run time).
    pub resolver_dir: PathBuf,
    /// The server's TLS certificate and key, and the CA of client
    /// certificates when clients must present one.
    pub tls: Option<(PathBuf, PathBuf)>,
}

impl ClusterKeys {
    /// New random keys.
    pub fn generate() -> ClusterKeys {
        ClusterKeys {
            operator: KeyPair::new_operator(),
            account: KeyPair::new_account(),
            signing: KeyPair::new_account(),
            system: KeyPair::new_account(),
        }
    }

    /// Writes the four private keys into `dir` (each 0600).
    pub fn save(&self, dir: &Path) -> Result<(), AuthError> {
        for (file, key) in [
            (OPERATOR_SEED, &self.operator),
            (ACCOUNT_SEED, &self.account),
            (SIGNING_SEED, &self.signing),
            (SYSTEM_SEED, &self.system),
        ] {
            let seed = key.seed().map_err(|e| AuthError::Sign(e.to_string()))?;
            write_private(&dir.join(file), format!("{seed}\n").as_bytes())?;
        }
        Ok(())
    }

    /// Reads the keys `save` wrote.
    pub fn load(dir: &Path) -> Result<ClusterKeys, AuthError> {
        let read = |file: &str, kind: &'static str, prefix: char| -> Result<KeyPair, AuthError> {
            let path = dir.join(file);
            let text = std::fs::read_to_string(&path).map_err(file_err(&path))?;
            let seed = text.trim();
            let bad = |reason: String| AuthError::BadSeed { path: path.display().to_string(), kind, reason };
            if !seed.starts_with(&format!("S{prefix}")) {
                return Err(bad("wrong key type".into()));
            }
            KeyPair::from_seed(seed).map_err(|e| bad(e.to_string()))
        };
        Ok(ClusterKeys {
            operator: read(OPERATOR_SEED, "operator", 'O')?,
            account: read(ACCOUNT_SEED, "account", 'A')?,
            signing: read(SIGNING_SEED, "account signing", 'A')?,
            system: read(SYSTEM_SEED, "system account", 'A')?,
        })
    }

    /// The VIGIL account's public key.
    pub fn account_key(&self) -> String {
        self.account.public_key()
    }

    /// The system account's public key.
    pub fn system_key(&self) -> String {
        self.system.public_key()
    }

    /// The operator JWT.
    pub fn operator_jwt(&self, iat: i64) -> Result<String, AuthError> {
        let claims = json!({
            "name": "vigil",
            "sub": self.operator.public_key(),
            "nats": { "system_account": self.system.public_key(), "type": "operator", "version": 2 },
        });
        sign(claims, &self.operator, iat)
    }

    /// The VIGIL account's JWT: JetStream on, the signing key, and the
    /// revoked user keys (each with when it was revoked, seconds: creds
    /// issued up to then are refused).
    pub fn account_jwt(&self, revocations: &BTreeMap<String, i64>, iat: i64) -> Result<String, AuthError> {
        let claims = json!({
            "name": ACCOUNT_NAME,
            "sub": self.account.public_key(),
            "nats": {
                "limits": {
                    "subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1,
                    "wildcards": true, "conn": -1, "leaf": -1,
                    "mem_storage": -1, "disk_storage": -1, "streams": -1, "consumer": -1,
                    "max_ack_pending": -1, "mem_max_stream_bytes": 0, "disk_max_stream_bytes": 0,
                    "max_bytes_required": false,
                },
                "signing_keys": [self.signing.public_key()],
                "revocations": revocations,
                "default_permissions": { "pub": {}, "sub": {} },
                "type": "account",
                "version": 2,
            },
        });
        sign(claims, &self.operator, iat)
    }

    /// The system account's JWT.
    pub fn system_account_jwt(&self, iat: i64) -> Result<String, AuthError> {
        let claims = json!({
            "name": "SYS",
            "sub": self.system.public_key(),
            "nats": {
                "limits": { "subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1,
                            "wildcards": true, "conn": -1, "leaf": -1 },
                "default_permissions": { "pub": {}, "sub": {} },
                "type": "account",
                "version": 2,
            },
        });
        sign(claims, &self.operator, iat)
    }

    /// New credentials for `grant`, with the permissions of its role.
    pub fn node_creds(&self, grant: &Grant, iat: i64) -> Result<Creds, AuthError> {
        self.node_creds_with(grant, &permissions(grant), iat)
    }

    /// New credentials for `grant` with the given permissions (tests use
    /// it to stand for a misconfigured server).
    pub fn node_creds_with(&self, grant: &Grant, perms: &Permissions, iat: i64) -> Result<Creds, AuthError> {
        let user = KeyPair::new_user();
        let mut tags = vec![format!("vigil-node:{}", grant.node), format!("vigil-role:{}", grant.role.as_str())];
        tags.extend(grant.org.map(|o| format!("vigil-org:{o}")));
        tags.extend(grant.slot.map(|s| format!("vigil-slot:{s}")));
        let mut nats = json!({
            "subs": -1, "data": -1, "payload": -1,
            "issuer_account": self.account.public_key(),
            "tags": tags,
            "type": "user",
            "version": 2,
        });
        if !perms.unrestricted {
            nats["pub"] = json!({ "allow": perms.publish });
            nats["sub"] = json!({ "allow": perms.subscribe });
        }
        let claims = json!({ "name": grant.node, "sub": user.public_key(), "nats": nats });
        let jwt = sign(claims, &self.signing, iat)?;
        let seed = user.seed().map_err(|e| AuthError::Sign(e.to_string()))?;
        Ok(Creds { user_key: user.public_key(), text: creds_text(&jwt, &seed) })
    }

    /// Credentials of a system-account user (pushes account updates).
    pub fn system_creds(&self, iat: i64) -> Result<Creds, AuthError> {
        let user = KeyPair::new_user();
        let claims = json!({
            "name": "vigil-system",
            "sub": user.public_key(),
            "nats": { "subs": -1, "data": -1, "payload": -1, "type": "user", "version": 2 },
        });
        let jwt = sign(claims, &self.system, iat)?;
        let seed = user.seed().map_err(|e| AuthError::Sign(e.to_string()))?;
        Ok(Creds { user_key: user.public_key(), text: creds_text(&jwt, &seed) })
    }

    /// The authentication part of a nats-server configuration: the
    /// operator, the system account, a full resolver (it keeps account
    /// updates, such as revocations, across restarts) preloaded with both
    /// accounts.
    pub fn auth_config(&self, operator_jwt: &Path, resolver_dir: &Path, iat: i64) -> Result<String, AuthError> {
        let account = self.account_jwt(&BTreeMap::new(), iat)?;
        let system = self.system_account_jwt(iat)?;
        Ok(format!(
            "# vigil cluster: decentralized authentication (written by `vigil cluster init`).\n\
             # A node's CONNECT carries its JWT with its permissions: room for them.\n\
             max_control_line: 16384\n\
             operator: \"{}\"\n\
             system_account: \"{}\"\n\
             resolver: {{\n  type: full\n  dir: \"{}\"\n  allow_delete: false\n  interval: \"2m\"\n}}\n\
             resolver_preload: {{\n  {}: \"{account}\"\n  {}: \"{system}\"\n}}\n",
            operator_jwt.display(),
            self.system.public_key(),
            resolver_dir.display(),
            self.account.public_key(),
            self.system.public_key(),
        ))
    }
}

/// Pushes the account JWT `jwt` to the server through a system-account
/// connection; the server stores it and closes the connections of users it
/// now revokes.
pub async fn push_account(system: &async_nats::Client, jwt: &str) -> Result<(), AuthError> {
    let reply = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        system.request("$SYS.REQ.CLAIMS.UPDATE", jwt.to_owned().into()),
    )
    .await
    .map_err(|_| AuthError::Push("no answer in 10 s".into()))?
    .map_err(|e| AuthError::Push(e.to_string()))?;
    let answer: Value = serde_json::from_slice(&reply.payload).unwrap_or(Value::Null);
    if let Some(error) = answer.get("error") {
        return Err(AuthError::Refused(error["description"].as_str().unwrap_or("unknown").to_owned()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(role: NodeRole, org: Option<u32>) -> Grant {
        Grant { node: "edge-a".into(), role, org, slot: Some(3) }
    }

    #[test]
    fn a_creds_file_carries_its_grant_and_its_jwt_verifies() {
        let keys = ClusterKeys::generate();
        let g = grant(NodeRole::Collector, Some(7));
        let creds = keys.node_creds(&g, 1_700_000_000).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("edge-a.creds");
        creds.write(&path).unwrap();
        assert_eq!(read_grant(&path).unwrap(), g);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
        let jwt = creds_jwt(creds.text()).unwrap();
        let (input, signature) = jwt.rsplit_once('.').unwrap();
        let signature = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(signature).unwrap();
        let signer = KeyPair::from_public_key(&keys.signing.public_key()).unwrap();
        signer.verify(input.as_bytes(), &signature).unwrap();
        let claims = jwt_claims(jwt).unwrap();
        assert_eq!(claims["sub"], creds.user_key.as_str());
        assert_eq!(claims["nats"]["issuer_account"], keys.account_key().as_str());
        assert_eq!(claims["iat"], 1_700_000_000);
        let seed = creds.text().lines().find(|l| l.starts_with("SU")).unwrap();
        assert!(!format!("{creds:?}").contains(seed), "Debug shows no seed");
        let shown = format!("{keys:?}");
        for key in [&keys.operator, &keys.account, &keys.signing, &keys.system] {
            assert!(!shown.contains(&key.seed().unwrap()), "{shown}");
            assert!(shown.contains(&key.public_key()), "{shown}");
        }
    }

    #[test]
    fn keys_survive_a_round_trip_through_their_files() {
        let keys = ClusterKeys::generate();
        let dir = tempfile::tempdir().unwrap();
        keys.save(dir.path()).unwrap();
        let back = ClusterKeys::load(dir.path()).unwrap();
        assert_eq!(back.account_key(), keys.account_key());
        assert_eq!(back.signing.public_key(), keys.signing.public_key());
        std::fs::write(dir.path().join(SIGNING_SEED), keys.operator.seed().unwrap()).unwrap();
        let err = ClusterKeys::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("signing.nk: not a NATS account signing seed"), "{err}");
    }

    #[test]
    fn a_bound_collector_may_publish_its_orgs_events_as_itself_only() {
        let p = permissions(&grant(NodeRole::Collector, Some(7)));
        assert!(p.publish.contains(&"vigil.events.*.7.edge-a".to_owned()));
        assert!(!p.publish.iter().any(|s| s.starts_with("$KV.") || s.starts_with("vigil.detections")));
        assert!(!p.publish.iter().any(|s| s.contains("CONSUMER")), "{:?}", p.publish);
        assert!(p.publish.contains(&control_get("budget.edge-a")));
        assert_eq!(p.subscribe, vec!["_INBOX_edge-a.>".to_owned()]);
        let any = permissions(&grant(NodeRole::Collector, None));
        assert!(any.publish.contains(&"vigil.events.*.*.edge-a".to_owned()));
        let w = permissions(&grant(NodeRole::Worker, None));
        assert!(w.publish.contains(&"vigil.detections.edge-a".to_owned()));
        assert!(!w.publish.iter().any(|s| s.starts_with("vigil.events") || s.contains("$KV.vigil_control")));
        assert!(permissions(&grant(NodeRole::Supervisor, None)).unrestricted);
    }

    #[test]
    fn revocations_are_in_the_account_jwt() {
        let keys = ClusterKeys::generate();
        let revoked = BTreeMap::from([("UABC".to_owned(), 1_700_000_100)]);
        let jwt = keys.account_jwt(&revoked, 1_700_000_200).unwrap();
        let claims = jwt_claims(&jwt).unwrap();
        assert_eq!(claims["nats"]["revocations"]["UABC"], 1_700_000_100);
        assert_eq!(claims["iss"], keys.operator.public_key().as_str());
        assert_eq!(claims["nats"]["signing_keys"][0], keys.signing.public_key().as_str());
    }
}
