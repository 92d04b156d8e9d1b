//! Who is who in a run: each node (participant or coordinator) has an ed25519 key pair kept in
//! a directory, and the coordinator has an enrolment file listing the public keys allowed in.
//!
//! The same key signs updates ([`crate::signing`]) and is the node's TLS key ([`crate::tls`]), so
//! the identity that authenticated a connection is the identity that signs what comes over it.
//!
//! # Key directory
//!
//! [`keygen`] writes three files into a directory (created owner-only if missing):
//!
//! | file | content |
//! |---|---|
//! | `private_key.pem` | the private key as PKCS#8 v1 PEM (`-----BEGIN PRIVATE KEY-----`, RFC 8410: exactly what `openssl genpkey -algorithm ed25519` writes and `openssl pkey` reads); created with mode 0600 from the start, never briefly readable by others |
//! | `public_key.hex` | the 32-byte public key as 64 lowercase hex digits and a newline |
//! | `node_id.txt` | the participant id and a newline |
//!
//! It refuses to overwrite any of them. [`NodeIdentity::load`] reads them back, refuses a
//! private key readable by group or others (like ssh), and checks that the public key file
//! matches the private key.
//!
//! # Participant ids
//!
//! A name given by the user, or else the key's [`fingerprint`] (the first 8 bytes of the
//! SHA-256 of the public key, in hex). Ids are 1 to 64 characters from `A-Z a-z 0-9 . _ -`,
//! starting with a letter or digit, so they are safe in logs, file names and TOML.
//!
//! # Enrolment file
//!
//! TOML, one table per participant:
//!
//! ```toml
//! [[participant]]
//! id = "alice"
//! public_key = "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c"
//! ```
//!
//! [`Enrolment::load`] refuses duplicate ids, duplicate keys, malformed or weak keys and unknown
//! fields, naming the file, the entry and its line.

use std::collections::HashMap;
use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use ed25519_dalek::{SigningKey, VerifyingKey};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use thiserror::Error;

/// File name of the PKCS#8 PEM private key in a key directory.
pub const PRIVATE_KEY_FILE: &str = "private_key.pem";
/// File name of the hex public key in a key directory.
pub const PUBLIC_KEY_FILE: &str = "public_key.hex";
/// File name of the participant id in a key directory.
pub const ID_FILE: &str = "node_id.txt";

/// Longest accepted participant id.
pub const MAX_ID_LEN: usize = 64;

/// Why a public key given as text is unusable.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum KeyError {
    /// Not hexadecimal (or an odd number of digits).
    #[error("not hex: {0}")]
    BadHex(String),
    /// Decodes to the wrong number of bytes.
    #[error("{0} bytes, expected 32")]
    WrongLength(usize),
    /// 32 bytes that are not a point on the curve.
    #[error("not a valid ed25519 public key")]
    InvalidPoint,
    /// A small-order point: signatures under it prove nothing.
    #[error("weak ed25519 public key (small order)")]
    Weak,
}

/// Errors reading, creating or using a node's key directory.
#[derive(Debug, Error)]
pub enum IdentityError {
    /// `keygen` found a key file already there.
    #[error("{} already exists; refusing to overwrite an existing key", path.display())]
    AlreadyExists { path: PathBuf },
    /// A file-system operation failed.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The private key file is not a PKCS#8 ed25519 key.
    #[error("{}: not a PKCS#8 ed25519 private key: {reason}", path.display())]
    BadPrivateKey { path: PathBuf, reason: String },
    /// A public key file holds an unusable key.
    #[error("{}: {source}", path.display())]
    BadPublicKey {
        path: PathBuf,
        #[source]
        source: KeyError,
    },
    /// The public key file is not the public half of the private key beside it.
    #[error("{} does not match the private key in {}", path.display(), private_key.display())]
    KeyMismatch { path: PathBuf, private_key: PathBuf },
    /// The private key can be read by other users.
    #[error(
        "{} is accessible by other users (mode {mode:o}); restrict it with `chmod 600`",
        path.display()
    )]
    InsecurePermissions { path: PathBuf, mode: u32 },
    /// A participant id breaks the naming rules.
    #[error("invalid participant id `{id}`: {reason}")]
    InvalidId { id: String, reason: &'static str },
    /// The operating system's random source failed.
    #[error("cannot gather randomness for a new key: {0}")]
    Randomness(String),
    /// The key could not be encoded as PKCS#8.
    #[error("cannot encode the private key: {0}")]
    Encode(String),
}

/// The first 8 bytes of SHA-256(public key) in hex: short enough to read out, long enough to
/// tell keys apart in a study.
pub fn fingerprint(key: &VerifyingKey) -> String {
    let digest = Sha256::digest(key.as_bytes());
    hex::encode(&digest[..8])
}

/// Lowercase hex of the 32 public-key bytes.
pub fn public_key_hex(key: &VerifyingKey) -> String {
    hex::encode(key.as_bytes())
}

/// Parses 64 hex digits (surrounding whitespace ignored) into a usable ed25519 public key.
pub fn parse_public_key_hex(text: &str) -> Result<VerifyingKey, KeyError> {
    let bytes = hex::decode(text.trim()).map_err(|error| KeyError::BadHex(error.to_string()))?;
    public_key_from_bytes(&bytes)
}

/// A usable ed25519 public key from raw bytes (rejects wrong lengths, invalid and weak points).
pub fn public_key_from_bytes(bytes: &[u8]) -> Result<VerifyingKey, KeyError> {
    let array: &[u8; 32] = bytes
        .try_into()
        .map_err(|_| KeyError::WrongLength(bytes.len()))?;
    let key = VerifyingKey::from_bytes(array).map_err(|_| KeyError::InvalidPoint)?;
    if key.is_weak() {
        return Err(KeyError::Weak);
    }
    Ok(key)
}

/// Reads a public key file (hex, as in `public_key.hex`), for example the coordinator's key a
/// client pins.
pub fn read_public_key_file(path: &Path) -> Result<VerifyingKey, IdentityError> {
    let text = fs::read_to_string(path).map_err(|source| IdentityError::Io {
        action: "read",
        path: path.to_path_buf(),
        source,
    })?;
    parse_public_key_hex(&text).map_err(|source| IdentityError::BadPublicKey {
        path: path.to_path_buf(),
        source,
    })
}

/// Checks a participant id against the naming rules (see the module doc).
pub fn validate_id(id: &str) -> Result<(), IdentityError> {
    let invalid = |reason| {
        Err(IdentityError::InvalidId {
            id: id.to_string(),
            reason,
        })
    };
    if id.is_empty() {
        return invalid("empty");
    }
    if id.len() > MAX_ID_LEN {
        return invalid("longer than 64 characters");
    }
    if !id.chars().next().is_some_and(|c| c.is_ascii_alphanumeric()) {
        return invalid("must start with a letter or digit");
    }
    if !id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        return invalid("only letters, digits, '.', '_' and '-' are allowed");
    }
    Ok(())
}

/// A node's identity: its participant id and its ed25519 signing key.
pub struct NodeIdentity {
    id: String,
    signing_key: SigningKey,
}

impl fmt::Debug for NodeIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeIdentity")
            .field("id", &self.id)
            .field("public_key", &public_key_hex(&self.public_key()))
            .finish_non_exhaustive()
    }
}

impl NodeIdentity {
    /// A fresh key from the operating system's random source. `id` defaults to the key's
    /// fingerprint.
    pub fn generate(id: Option<&str>) -> Result<Self, IdentityError> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|error| IdentityError::Randomness(error.to_string()))?;
        let identity = Self::from_signing_key(id, SigningKey::from_bytes(&seed));
        seed.fill(0);
        identity
    }

    /// An identity for an existing key. `id` defaults to the key's fingerprint.
    pub fn from_signing_key(
        id: Option<&str>,
        signing_key: SigningKey,
    ) -> Result<Self, IdentityError> {
        let id = match id {
            Some(id) => {
                validate_id(id)?;
                id.to_string()
            }
            None => fingerprint(&signing_key.verifying_key()),
        };
        Ok(Self { id, signing_key })
    }

    /// The participant id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The public key.
    pub fn public_key(&self) -> VerifyingKey {
        self.signing_key.verifying_key()
    }

    /// The signing key (also the TLS private key).
    pub fn signing_key(&self) -> &SigningKey {
        &self.signing_key
    }

    /// [`fingerprint`] of the public key.
    pub fn fingerprint(&self) -> String {
        fingerprint(&self.public_key())
    }

    /// The private key as PKCS#8 v1 DER (RFC 8410, without the optional public key: the form
    /// OpenSSL writes and every reader accepts), as rustls and rcgen take it.
    pub fn pkcs8_der(&self) -> Result<Vec<u8>, IdentityError> {
        let document = self
            .pkcs8_v1()
            .to_pkcs8_der()
            .map_err(|error| IdentityError::Encode(error.to_string()))?;
        Ok(document.as_bytes().to_vec())
    }

    fn pkcs8_v1(&self) -> ed25519_dalek::pkcs8::KeypairBytes {
        ed25519_dalek::pkcs8::KeypairBytes {
            secret_key: self.signing_key.to_bytes(),
            public_key: None,
        }
    }

    /// The `[[participant]]` table to paste into an enrolment file.
    pub fn enrolment_entry(&self) -> String {
        Participant {
            id: self.id.clone(),
            public_key: self.public_key(),
        }
        .to_toml()
    }

    /// Writes the key directory (see the module doc), creating `dir` with mode 0700 if it does
    /// not exist. Refuses to overwrite any existing key file.
    pub fn save_new(&self, dir: &Path) -> Result<(), IdentityError> {
        create_private_dir(dir)?;
        let private_path = dir.join(PRIVATE_KEY_FILE);
        let public_path = dir.join(PUBLIC_KEY_FILE);
        let id_path = dir.join(ID_FILE);
        for path in [&private_path, &public_path, &id_path] {
            if path.exists() {
                return Err(IdentityError::AlreadyExists { path: path.clone() });
            }
        }
        let pem = self
            .pkcs8_v1()
            .to_pkcs8_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
            .map_err(|error| IdentityError::Encode(error.to_string()))?;
        write_new_file(&private_path, pem.as_bytes(), 0o600)?;
        write_new_file(
            &public_path,
            format!("{}\n", public_key_hex(&self.public_key())).as_bytes(),
            0o644,
        )?;
        write_new_file(&id_path, format!("{}\n", self.id).as_bytes(), 0o644)?;
        Ok(())
    }

    /// Reads a key directory written by [`keygen`]. The id comes from `node_id.txt`, or is the
    /// fingerprint when that file is absent; `public_key.hex`, when present, must match.
    pub fn load(dir: &Path) -> Result<Self, IdentityError> {
        let private_path = dir.join(PRIVATE_KEY_FILE);
        check_private_permissions(&private_path)?;
        let pem = fs::read_to_string(&private_path).map_err(|source| IdentityError::Io {
            action: "read",
            path: private_path.clone(),
            source,
        })?;
        let signing_key =
            SigningKey::from_pkcs8_pem(&pem).map_err(|error| IdentityError::BadPrivateKey {
                path: private_path.clone(),
                reason: error.to_string(),
            })?;

        let public_path = dir.join(PUBLIC_KEY_FILE);
        if public_path.exists() {
            let public = read_public_key_file(&public_path)?;
            if public != signing_key.verifying_key() {
                return Err(IdentityError::KeyMismatch {
                    path: public_path,
                    private_key: private_path,
                });
            }
        }

        let id_path = dir.join(ID_FILE);
        let id = match fs::read_to_string(&id_path) {
            Ok(text) => Some(text.trim().to_string()),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => None,
            Err(source) => {
                return Err(IdentityError::Io {
                    action: "read",
                    path: id_path,
                    source,
                });
            }
        };
        Self::from_signing_key(id.as_deref(), signing_key)
    }
}

/// Creates a new identity in `dir` (see the module doc) and returns it; refuses to overwrite an
/// existing key. `id` defaults to the key's fingerprint.
pub fn keygen(dir: &Path, id: Option<&str>) -> Result<NodeIdentity, IdentityError> {
    let identity = NodeIdentity::generate(id)?;
    identity.save_new(dir)?;
    Ok(identity)
}

fn create_private_dir(dir: &Path) -> Result<(), IdentityError> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir).map_err(|source| IdentityError::Io {
        action: "create directory",
        path: dir.to_path_buf(),
        source,
    })
}

fn write_new_file(path: &Path, contents: &[u8], mode: u32) -> Result<(), IdentityError> {
    let io = |action| {
        move |source| IdentityError::Io {
            action,
            path: path.to_path_buf(),
            source,
        }
    };
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = options.open(path).map_err(|source| {
        if source.kind() == std::io::ErrorKind::AlreadyExists {
            IdentityError::AlreadyExists {
                path: path.to_path_buf(),
            }
        } else {
            IdentityError::Io {
                action: "create",
                path: path.to_path_buf(),
                source,
            }
        }
    })?;
    file.write_all(contents).map_err(io("write"))?;
    file.sync_all().map_err(io("sync"))
}

#[cfg(unix)]
fn check_private_permissions(path: &Path) -> Result<(), IdentityError> {
    use std::os::unix::fs::PermissionsExt;
    let metadata = fs::metadata(path).map_err(|source| IdentityError::Io {
        action: "read",
        path: path.to_path_buf(),
        source,
    })?;
    let mode = metadata.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(IdentityError::InsecurePermissions {
            path: path.to_path_buf(),
            mode,
        });
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_private_permissions(_path: &Path) -> Result<(), IdentityError> {
    Ok(())
}

/// One enrolled participant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Participant {
    pub id: String,
    pub public_key: VerifyingKey,
}

impl Participant {
    /// This participant as an enrolment-file table.
    pub fn to_toml(&self) -> String {
        format!(
            "[[participant]]\nid = \"{}\"\npublic_key = \"{}\"\n",
            self.id,
            public_key_hex(&self.public_key)
        )
    }
}

/// What is wrong with one enrolment entry.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum EntryProblem {
    /// The id breaks the naming rules.
    #[error("participant id `{id}` is invalid: {reason}")]
    InvalidId { id: String, reason: &'static str },
    /// The public key is unusable.
    #[error("public key of `{id}`: {source}")]
    Key {
        id: String,
        #[source]
        source: KeyError,
    },
    /// The id was already used by an earlier entry.
    #[error("duplicate participant id `{id}` (first listed on line {first_line})")]
    DuplicateId { id: String, first_line: usize },
    /// The key was already enrolled under another id.
    #[error("public key of `{id}` is already enrolled as `{other}` (line {first_line})")]
    DuplicateKey {
        id: String,
        other: String,
        first_line: usize,
    },
}

/// Errors loading an enrolment file.
#[derive(Debug, Error)]
pub enum EnrolmentError {
    /// The file could not be read.
    #[error("cannot read enrolment file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Not valid TOML, or not the expected tables (toml's message names line and column).
    #[error("{}: not a valid enrolment file: {message}", path.display())]
    Syntax { path: PathBuf, message: String },
    /// One entry is wrong.
    #[error("{}: {table} #{entry} (line {line}): {problem}", path.display())]
    Entry {
        path: PathBuf,
        /// The entry's table: `participant` or `operator`.
        table: &'static str,
        /// 1-based position among the tables of its kind.
        entry: usize,
        /// 1-based line of the entry's `id`.
        line: usize,
        problem: EntryProblem,
    },
    /// The file enrols nobody.
    #[error("{}: no participants enrolled (add [[participant]] tables)", path.display())]
    Empty { path: PathBuf },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EnrolmentFile {
    #[serde(default)]
    participant: Vec<RawParticipant>,
    /// Operator keys: read-only (`mpcl status`), never a participant.
    #[serde(default)]
    operator: Vec<RawParticipant>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawParticipant {
    id: toml::Spanned<String>,
    public_key: toml::Spanned<String>,
}

/// The participants allowed into a run, and the operators allowed to look at it.
///
/// An operator (`[[operator]]` table, same fields as `[[participant]]`) may connect and ask for
/// the run's status but never trains, never uploads and never counts as a participant: a key for
/// whoever watches a study without taking part in it. A key may not be both.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Enrolment {
    participants: Vec<Participant>,
    operators: Vec<Participant>,
}

impl Enrolment {
    /// Reads and checks an enrolment file.
    pub fn load(path: &Path) -> Result<Self, EnrolmentError> {
        let text = fs::read_to_string(path).map_err(|source| EnrolmentError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses enrolment TOML; `path` is only used in error messages.
    pub fn parse(text: &str, path: &Path) -> Result<Self, EnrolmentError> {
        let file: EnrolmentFile = toml::from_str(text).map_err(|error| EnrolmentError::Syntax {
            path: path.to_path_buf(),
            message: error.to_string(),
        })?;
        if file.participant.is_empty() {
            return Err(EnrolmentError::Empty {
                path: path.to_path_buf(),
            });
        }
        let operator_count = file.operator.len();
        let line_of = |offset: usize| text[..offset.min(text.len())].matches('\n').count() + 1;
        let mut participants: Vec<Participant> = Vec::with_capacity(file.participant.len());
        let mut lines_by_id: HashMap<String, usize> = HashMap::new();
        let mut by_key: HashMap<[u8; 32], (String, usize)> = HashMap::new();
        let participant_count = file.participant.len();
        // Participants first, then operators; both share the id and key namespaces.
        let entries = (file.participant.into_iter().enumerate())
            .map(|(index, raw)| ("participant", index, raw))
            .chain(
                (file.operator.into_iter().enumerate())
                    .map(|(index, raw)| ("operator", index, raw)),
            );
        for (table, index, raw) in entries {
            let line = line_of(raw.id.span().start);
            let entry_error = |problem| EnrolmentError::Entry {
                path: path.to_path_buf(),
                table,
                entry: index + 1,
                line,
                problem,
            };
            let id = raw.id.into_inner();
            if let Err(IdentityError::InvalidId { id, reason }) = validate_id(&id) {
                return Err(entry_error(EntryProblem::InvalidId { id, reason }));
            }
            let public_key = parse_public_key_hex(raw.public_key.get_ref()).map_err(|source| {
                entry_error(EntryProblem::Key {
                    id: id.clone(),
                    source,
                })
            })?;
            if let Some(&first_line) = lines_by_id.get(&id) {
                return Err(entry_error(EntryProblem::DuplicateId { id, first_line }));
            }
            if let Some((other, first_line)) = by_key.get(public_key.as_bytes()) {
                return Err(entry_error(EntryProblem::DuplicateKey {
                    id,
                    other: other.clone(),
                    first_line: *first_line,
                }));
            }
            lines_by_id.insert(id.clone(), line);
            by_key.insert(public_key.to_bytes(), (id.clone(), line));
            participants.push(Participant { id, public_key });
        }
        let operators = participants.split_off(participant_count);
        debug_assert_eq!(operators.len(), operator_count);
        Ok(Self {
            participants,
            operators,
        })
    }

    /// An enrolment of the given participants (checked like a file; errors name `<memory>`).
    pub fn from_participants(participants: Vec<Participant>) -> Result<Self, EnrolmentError> {
        let text: String = participants.iter().map(Participant::to_toml).collect();
        Self::parse(&text, Path::new("<memory>"))
    }

    /// All participants, in file order.
    pub fn participants(&self) -> &[Participant] {
        &self.participants
    }

    /// The participant with this id.
    pub fn by_id(&self, id: &str) -> Option<&Participant> {
        self.participants.iter().find(|p| p.id == id)
    }

    /// The participant with this public key (for example the key that authenticated a TLS
    /// connection).
    pub fn by_key(&self, key: &VerifyingKey) -> Option<&Participant> {
        self.participants.iter().find(|p| &p.public_key == key)
    }

    /// The enrolled participants' public keys.
    pub fn public_keys(&self) -> impl Iterator<Item = VerifyingKey> + '_ {
        self.participants.iter().map(|p| p.public_key)
    }

    /// The operators (read-only keys), in file order.
    pub fn operators(&self) -> &[Participant] {
        &self.operators
    }

    /// The operator with this public key.
    pub fn operator_by_key(&self, key: &VerifyingKey) -> Option<&Participant> {
        self.operators.iter().find(|p| &p.public_key == key)
    }

    /// The operators' public keys (the TLS server accepts them too).
    pub fn operator_keys(&self) -> impl Iterator<Item = VerifyingKey> + '_ {
        self.operators.iter().map(|p| p.public_key)
    }

    /// Number of participants.
    pub fn len(&self) -> usize {
        self.participants.len()
    }

    /// Whether nobody is enrolled (never true for a loaded file).
    pub fn is_empty(&self) -> bool {
        self.participants.is_empty()
    }

    /// The enrolment as TOML, loadable by [`Enrolment::parse`].
    pub fn to_toml(&self) -> String {
        self.participants
            .iter()
            .map(Participant::to_toml)
            .chain(
                self.operators
                    .iter()
                    .map(|o| o.to_toml().replacen("[[participant]]", "[[operator]]", 1)),
            )
            .collect::<Vec<_>>()
            .join("\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Written by `openssl genpkey -algorithm ed25519` (PKCS#8 v1, no public key inside);
    /// `openssl pkey -pubout -outform DER | tail -c 32 | xxd -p -c 64` gives `OPENSSL_PUBLIC`.
    const OPENSSL_PEM: &str = "-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEIB6//3z/mNvEl/QWA6DiHgAim9CbRDvqTPbfCbZ0RFtF
-----END PRIVATE KEY-----
";
    const OPENSSL_PUBLIC: &str = "99e7a9931fb151c43e0bb02988a8327374f644bed91c208fbca96214cb3ce995";

    fn key_hex(seed: u8) -> String {
        public_key_hex(&SigningKey::from_bytes(&[seed; 32]).verifying_key())
    }

    #[test]
    fn keygen_writes_owner_only_key_and_loads_back() {
        let dir = tempfile::tempdir().unwrap();
        let keys = dir.path().join("alice-keys");
        let identity = keygen(&keys, Some("alice")).unwrap();
        assert_eq!(identity.id(), "alice");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(keys.join(PRIVATE_KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
            let dir_mode = fs::metadata(&keys).unwrap().permissions().mode();
            assert_eq!(dir_mode & 0o777, 0o700);
        }
        let pem = fs::read_to_string(keys.join(PRIVATE_KEY_FILE)).unwrap();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        let public = read_public_key_file(&keys.join(PUBLIC_KEY_FILE)).unwrap();
        assert_eq!(public, identity.public_key());
        let loaded = NodeIdentity::load(&keys).unwrap();
        assert_eq!(loaded.id(), "alice");
        assert_eq!(loaded.public_key(), identity.public_key());
    }

    #[test]
    fn keygen_refuses_to_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let first = keygen(dir.path(), None).unwrap();
        assert_eq!(first.id(), first.fingerprint());
        assert_eq!(first.id().len(), 16);
        let error = keygen(dir.path(), None).unwrap_err();
        assert!(
            matches!(error, IdentityError::AlreadyExists { .. }),
            "{error}"
        );
        // The original key is untouched.
        let loaded = NodeIdentity::load(dir.path()).unwrap();
        assert_eq!(loaded.public_key(), first.public_key());
    }

    #[test]
    fn keygen_rejects_bad_ids() {
        let dir = tempfile::tempdir().unwrap();
        for bad in ["", "-x", "a b", "ünï", &"x".repeat(65)] {
            let error = keygen(dir.path(), Some(bad)).unwrap_err();
            assert!(matches!(error, IdentityError::InvalidId { .. }), "{bad}");
        }
        assert!(!dir.path().join(PRIVATE_KEY_FILE).exists());
    }

    #[cfg(unix)]
    #[test]
    fn world_readable_private_key_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        keygen(dir.path(), None).unwrap();
        let path = dir.path().join(PRIVATE_KEY_FILE);
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let error = NodeIdentity::load(dir.path()).unwrap_err();
        assert!(
            matches!(
                error,
                IdentityError::InsecurePermissions { mode: 0o644, .. }
            ),
            "{error}"
        );
    }

    #[test]
    fn mismatched_public_key_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        keygen(dir.path(), None).unwrap();
        fs::write(dir.path().join(PUBLIC_KEY_FILE), key_hex(9)).unwrap();
        let error = NodeIdentity::load(dir.path()).unwrap_err();
        assert!(
            matches!(error, IdentityError::KeyMismatch { .. }),
            "{error}"
        );
    }

    #[test]
    fn key_files_match_what_openssl_writes() {
        let dir = tempfile::tempdir().unwrap();
        write_new_file(
            &dir.path().join(PRIVATE_KEY_FILE),
            OPENSSL_PEM.as_bytes(),
            0o600,
        )
        .unwrap();
        let identity = NodeIdentity::load(dir.path()).unwrap();
        assert_eq!(public_key_hex(&identity.public_key()), OPENSSL_PUBLIC);
        // No id file: the id is the fingerprint.
        assert_eq!(identity.id(), identity.fingerprint());
        // Written back, the private key file is byte for byte what OpenSSL wrote.
        let out = dir.path().join("rewritten");
        identity.save_new(&out).unwrap();
        assert_eq!(
            fs::read_to_string(out.join(PRIVATE_KEY_FILE)).unwrap(),
            OPENSSL_PEM
        );
    }

    #[test]
    fn public_key_parsing_names_the_problem() {
        assert!(matches!(
            parse_public_key_hex("zz"),
            Err(KeyError::BadHex(_))
        ));
        assert_eq!(parse_public_key_hex("abcd"), Err(KeyError::WrongLength(2)));
        // The identity point: small order.
        let mut identity_point = [0u8; 32];
        identity_point[0] = 1;
        assert_eq!(
            parse_public_key_hex(&hex::encode(identity_point)),
            Err(KeyError::Weak)
        );
        let good = key_hex(1);
        assert!(parse_public_key_hex(&format!("  {good}\n")).is_ok());
    }

    fn parse(text: &str) -> Result<Enrolment, EnrolmentError> {
        Enrolment::parse(text, Path::new("enrolment.toml"))
    }

    #[test]
    fn enrolment_round_trips() {
        let text = format!(
            "# study 7\n[[participant]]\nid = \"alice\"\npublic_key = \"{}\"\n\n[[participant]]\nid = \"bob\"\npublic_key = \"{}\"\n",
            key_hex(1),
            key_hex(2)
        );
        let enrolment = parse(&text).unwrap();
        assert_eq!(enrolment.len(), 2);
        let bob = enrolment.by_id("bob").unwrap();
        assert_eq!(enrolment.by_key(&bob.public_key).unwrap().id, "bob");
        assert_eq!(parse(&enrolment.to_toml()).unwrap(), enrolment);
        let identity =
            NodeIdentity::from_signing_key(Some("carol"), SigningKey::from_bytes(&[3; 32]))
                .unwrap();
        let pasted = parse(&identity.enrolment_entry()).unwrap();
        assert_eq!(pasted.participants()[0].public_key, identity.public_key());
    }

    fn entry_error(text: &str) -> (usize, usize, EntryProblem, String) {
        match parse(text).unwrap_err() {
            error @ EnrolmentError::Entry { .. } => {
                let message = error.to_string();
                let EnrolmentError::Entry {
                    entry,
                    line,
                    problem,
                    ..
                } = error
                else {
                    unreachable!()
                };
                (entry, line, problem, message)
            }
            other => panic!("expected an entry error, got {other}"),
        }
    }

    #[test]
    fn duplicate_ids_name_both_lines() {
        let text = format!(
            "[[participant]]\nid = \"alice\"\npublic_key = \"{}\"\n[[participant]]\nid = \"alice\"\npublic_key = \"{}\"\n",
            key_hex(1),
            key_hex(2)
        );
        let (entry, line, problem, message) = entry_error(&text);
        assert_eq!((entry, line), (2, 5));
        assert_eq!(
            problem,
            EntryProblem::DuplicateId {
                id: "alice".into(),
                first_line: 2
            }
        );
        assert!(
            message.starts_with("enrolment.toml: participant #2 (line 5)"),
            "{message}"
        );
    }

    #[test]
    fn duplicate_keys_are_refused() {
        let text = format!(
            "[[participant]]\nid = \"alice\"\npublic_key = \"{0}\"\n[[participant]]\nid = \"bob\"\npublic_key = \"{0}\"\n",
            key_hex(1)
        );
        let (_, _, problem, _) = entry_error(&text);
        assert!(matches!(problem, EntryProblem::DuplicateKey { other, .. } if other == "alice"));
    }

    #[test]
    fn bad_keys_and_ids_are_refused_with_their_entry() {
        let (entry, line, problem, _) =
            entry_error("[[participant]]\nid = \"alice\"\npublic_key = \"xyz\"\n");
        assert_eq!((entry, line), (1, 2));
        assert!(matches!(
            problem,
            EntryProblem::Key {
                source: KeyError::BadHex(_),
                ..
            }
        ));
        let (_, _, problem, _) =
            entry_error("[[participant]]\nid = \"alice\"\npublic_key = \"abcdef\"\n");
        assert!(matches!(
            problem,
            EntryProblem::Key {
                source: KeyError::WrongLength(3),
                ..
            }
        ));
        let (_, _, problem, _) = entry_error(&format!(
            "[[participant]]\nid = \"a b\"\npublic_key = \"{}\"\n",
            key_hex(1)
        ));
        assert!(matches!(problem, EntryProblem::InvalidId { .. }));
    }

    #[test]
    fn syntax_errors_and_empty_files_are_reported() {
        let error = parse("[[participant]]\nid = \"alice\"\npublic_key = 12\n").unwrap_err();
        assert!(matches!(error, EnrolmentError::Syntax { .. }), "{error}");
        assert!(error.to_string().contains("line 3"), "{error}");
        let error = parse("[[participant]]\nid = \"a\"\nkey = \"x\"\n").unwrap_err();
        assert!(matches!(error, EnrolmentError::Syntax { .. }), "{error}");
        assert!(matches!(
            parse("# nobody yet\n").unwrap_err(),
            EnrolmentError::Empty { .. }
        ));
        let error = Enrolment::load(Path::new("/nonexistent/enrolment.toml")).unwrap_err();
        assert!(error.to_string().contains("/nonexistent/enrolment.toml"));
    }

    #[test]
    fn operators_are_enrolled_apart_from_participants() {
        let text = format!(
            "[[participant]]\nid = \"alice\"\npublic_key = \"{}\"\n\n[[operator]]\nid = \"ops\"\npublic_key = \"{}\"\n",
            key_hex(1),
            key_hex(2)
        );
        let enrolment = parse(&text).unwrap();
        assert_eq!(enrolment.len(), 1, "an operator is not a participant");
        assert_eq!(enrolment.operators().len(), 1);
        let ops = parse_public_key_hex(&key_hex(2)).unwrap();
        assert_eq!(enrolment.operator_by_key(&ops).unwrap().id, "ops");
        assert!(enrolment.by_key(&ops).is_none());
        assert_eq!(parse(&enrolment.to_toml()).unwrap(), enrolment);
        // One key cannot be both.
        let both = format!(
            "[[participant]]\nid = \"alice\"\npublic_key = \"{0}\"\n[[operator]]\nid = \"ops\"\npublic_key = \"{0}\"\n",
            key_hex(1)
        );
        let (entry, line, problem, message) = entry_error(&both);
        assert_eq!((entry, line), (1, 5));
        assert!(matches!(problem, EntryProblem::DuplicateKey { other, .. } if other == "alice"));
        assert!(
            message.starts_with("enrolment.toml: operator #1 (line 5)"),
            "an operator's entry is numbered among the operators: {message}"
        );
    }
}
