//! TLS 1.3 configurations that authenticate nodes by their ed25519 keys instead of by a CA.
//!
//! Every node's certificate is self-signed with its own identity key ([`crate::identity`]).
//! Trust is decided by the key alone:
//!
//! - the coordinator ([`server_config`]) requires a client certificate and accepts only keys
//!   listed in the enrolment;
//! - a client ([`client_config`]) accepts only the coordinator key it was given (pinning; the
//!   server name is not checked, since there is no CA to vouch for names).
//!
//! Both custom verifiers still check the TLS handshake signature with
//! `rustls::crypto::verify_tls13_signature`: that is what proves the peer holds the private key,
//! a certificate alone can be copied. Certificate validity dates are ignored (as with ssh host
//! keys); a key is revoked by removing it from the enrolment.
//!
//! Configs are built only through `builder_with_provider` with the ring provider: with a second
//! provider compiled in, rustls' default path panics. TLS 1.3 only, ALPN [`ALPN`], no session
//! resumption or tickets (so every connection presents, and is checked against, the current
//! enrolment). Both configs are what quinn wants:
//! `quinn::crypto::rustls::QuicServerConfig::try_from(server_config(..)?)` and
//! `QuicClientConfig::try_from(client_config(..)?)`; connect with [`TLS_SERVER_NAME`].
//!
//! After the handshake, read the peer's key with [`peer_public_key`] (from
//! `peer_certificates()`) or [`peer_public_key_from_identity`] (from quinn's
//! `Connection::peer_identity()`), and map it to a participant with
//! [`Enrolment::by_key`](crate::identity::Enrolment::by_key).

use std::any::Any;
use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;

use ed25519_dalek::VerifyingKey;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, DistinguishedName, OtherError,
    ServerConfig, SignatureScheme,
};
use thiserror::Error;

use crate::codec::ALPN;
use crate::identity::{KeyError, NodeIdentity, fingerprint, public_key_from_bytes};

/// The name clients connect to and the coordinator's certificate carries. Pinning makes names
/// irrelevant, but TLS needs one.
pub const TLS_SERVER_NAME: &str = "mpcl-coordinator";

/// DER prefix of an ed25519 SubjectPublicKeyInfo (RFC 8410): SEQUENCE { SEQUENCE { OID
/// 1.3.101.112 }, BIT STRING (0 unused bits) } followed by the 32 key bytes.
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// Errors building TLS configurations or reading peer identities.
#[derive(Debug, Error)]
pub enum TlsError {
    /// The identity key could not be exported.
    #[error("cannot export the identity key: {0}")]
    Key(String),
    /// rcgen could not make the self-signed certificate.
    #[error("cannot create the self-signed certificate: {0}")]
    Certificate(String),
    /// rustls refused the configuration.
    #[error("cannot build the TLS configuration: {0}")]
    Config(#[from] rustls::Error),
    /// The peer presented no certificate (only possible before the handshake completed).
    #[error("the peer presented no certificate")]
    NoPeerCertificate,
    /// The certificate does not parse.
    #[error("unparseable certificate: {0}")]
    BadCertificate(String),
    /// The certificate's key is not an ed25519 key.
    #[error("the certificate's key is not an ed25519 key")]
    NotEd25519,
    /// The certificate holds an unusable ed25519 key.
    #[error("the certificate's key is unusable: {0}")]
    BadKey(#[from] KeyError),
    /// A client key not in the enrolment.
    #[error("client key {fingerprint} is not enrolled")]
    NotEnrolled { fingerprint: String },
    /// A server key other than the pinned one.
    #[error("coordinator key {found} is not the pinned key {expected}")]
    NotPinned { expected: String, found: String },
    /// `peer_identity()` held something other than a certificate chain.
    #[error("the connection's peer identity is not a rustls certificate chain")]
    UnexpectedIdentity,
}

/// The ring crypto provider every config here is built with, preferring AES-128-GCM with
/// SHA-256 over ring's default first choice, AES-256-GCM with SHA-384.
///
/// Why: on the coordinator every QUIC packet is sealed or opened with the suite's AEAD, and
/// every handshake runs its key schedule (a few dozen HKDF expansions). ring hashes SHA-256 with
/// the CPU's SHA extensions where they exist but SHA-384 in software, and AES-128 takes 10
/// rounds per block to AES-256's 14: in a profile of `mpcl bench --only flower` the SHA-384 key
/// schedule alone was 5% of the coordinator's CPU (NOTES.md, session 11). Both are TLS 1.3
/// suites every implementation must offer; the other two stay available to peers that prefer
/// them.
pub fn crypto_provider() -> Arc<CryptoProvider> {
    let mut provider = rustls::crypto::ring::default_provider();
    provider
        .cipher_suites
        .sort_by_key(|suite| suite.suite() != rustls::CipherSuite::TLS13_AES_128_GCM_SHA256);
    Arc::new(provider)
}

/// The server name a client connects to ([`TLS_SERVER_NAME`]).
pub fn server_name() -> ServerName<'static> {
    ServerName::DnsName(
        rustls::pki_types::DnsName::try_from(TLS_SERVER_NAME)
            .expect("TLS_SERVER_NAME is a valid DNS name")
            .to_owned(),
    )
}

/// A self-signed certificate for `identity`'s ed25519 key, and that key as rustls wants it.
/// The subject's common name is the participant id.
pub fn certificate(
    identity: &NodeIdentity,
) -> Result<(CertificateDer<'static>, PrivateKeyDer<'static>), TlsError> {
    let der = identity
        .pkcs8_der()
        .map_err(|error| TlsError::Key(error.to_string()))?;
    let pkcs8 = PrivatePkcs8KeyDer::from(der);
    let key_pair = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&pkcs8, &rcgen::PKCS_ED25519)
        .map_err(|error| TlsError::Key(error.to_string()))?;
    let mut params = rcgen::CertificateParams::new(vec![TLS_SERVER_NAME.to_string()])
        .map_err(|error| TlsError::Certificate(error.to_string()))?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, identity.id());
    let certificate = params
        .self_signed(&key_pair)
        .map_err(|error| TlsError::Certificate(error.to_string()))?;
    Ok((certificate.der().clone(), PrivateKeyDer::Pkcs8(pkcs8)))
}

/// The ed25519 public key inside a certificate.
pub fn public_key_from_certificate(cert: &CertificateDer<'_>) -> Result<VerifyingKey, TlsError> {
    let parsed = webpki::EndEntityCert::try_from(cert)
        .map_err(|error| TlsError::BadCertificate(format!("{error:?}")))?;
    let spki = parsed.subject_public_key_info();
    let bytes = spki.as_ref();
    let key = bytes
        .strip_prefix(&ED25519_SPKI_PREFIX[..])
        .ok_or(TlsError::NotEd25519)?;
    Ok(public_key_from_bytes(key)?)
}

/// The ed25519 key of the peer from its verified certificate chain (rustls'
/// `peer_certificates()`): the key that authenticated the connection.
pub fn peer_public_key(certs: &[CertificateDer<'_>]) -> Result<VerifyingKey, TlsError> {
    let end_entity = certs.first().ok_or(TlsError::NoPeerCertificate)?;
    public_key_from_certificate(end_entity)
}

/// [`peer_public_key`] for what quinn's `Connection::peer_identity()` returns (a boxed
/// `Vec<CertificateDer<'static>>`): pass `identity.as_ref()`.
pub fn peer_public_key_from_identity(identity: &dyn Any) -> Result<VerifyingKey, TlsError> {
    let certs = identity
        .downcast_ref::<Vec<CertificateDer<'static>>>()
        .ok_or(TlsError::UnexpectedIdentity)?;
    peer_public_key(certs)
}

/// Our own reason inside a rustls error produced by these verifiers (for example
/// [`TlsError::NotEnrolled`]), for logging a rejection in words.
pub fn rejection_reason(error: &rustls::Error) -> Option<&TlsError> {
    match error {
        rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(inner))) => {
            inner.downcast_ref::<TlsError>()
        }
        _ => None,
    }
}

/// The fingerprint named by a [`TlsError::NotEnrolled`] rejection in the text of a failed
/// handshake. QUIC carries a TLS failure only as text (and rustls renders our reason with
/// `Debug`), so this is how the coordinator and the client turn it back into a readable line.
pub fn not_enrolled_fingerprint(reason: &str) -> Option<&str> {
    const MARKER: &str = "NotEnrolled { fingerprint: \"";
    let start = reason.find(MARKER)? + MARKER.len();
    let length = reason[start..].find('"')?;
    Some(&reason[start..start + length])
}

/// The (expected, presented) fingerprints named by a [`TlsError::NotPinned`] rejection in the
/// text of a failed handshake (see [`not_enrolled_fingerprint`] for why text).
pub fn not_pinned_fingerprints(reason: &str) -> Option<(&str, &str)> {
    fn quoted_after<'a>(text: &'a str, marker: &str) -> Option<&'a str> {
        let start = text.find(marker)? + marker.len();
        let length = text[start..].find('"')?;
        Some(&text[start..start + length])
    }
    let rest = &reason[reason.find("NotPinned {")?..];
    Some((
        quoted_after(rest, "expected: \"")?,
        quoted_after(rest, "found: \"")?,
    ))
}

fn certificate_error(error: TlsError) -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(error))))
}

fn bad_encoding(error: TlsError) -> rustls::Error {
    match error {
        TlsError::BadCertificate(_) => {
            rustls::Error::InvalidCertificate(CertificateError::BadEncoding)
        }
        other => certificate_error(other),
    }
}

/// Checks a TLS 1.3 handshake signature: ed25519 only, verified against the certificate's key.
fn verify_handshake_signature(
    algorithms: &WebPkiSupportedAlgorithms,
    message: &[u8],
    cert: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
) -> Result<HandshakeSignatureValid, rustls::Error> {
    if dss.scheme != SignatureScheme::ED25519 {
        return Err(rustls::Error::PeerMisbehaved(
            rustls::PeerMisbehaved::SignedHandshakeWithUnadvertisedSigScheme,
        ));
    }
    rustls::crypto::verify_tls13_signature(message, cert, dss, algorithms)
}

fn tls12_refused() -> Result<HandshakeSignatureValid, rustls::Error> {
    Err(rustls::Error::PeerIncompatible(
        rustls::PeerIncompatible::Tls12NotOffered,
    ))
}

/// Accepts client certificates whose ed25519 key is enrolled.
struct EnrolledClientVerifier {
    enrolled: HashSet<[u8; 32]>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl fmt::Debug for EnrolledClientVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EnrolledClientVerifier")
            .field("enrolled", &self.enrolled.len())
            .finish()
    }
}

impl ClientCertVerifier for EnrolledClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let key = public_key_from_certificate(end_entity).map_err(bad_encoding)?;
        if !self.enrolled.contains(key.as_bytes()) {
            return Err(certificate_error(TlsError::NotEnrolled {
                fingerprint: fingerprint(&key),
            }));
        }
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        tls12_refused()
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_handshake_signature(&self.algorithms, message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }
}

/// Accepts only the pinned coordinator key.
struct PinnedServerVerifier {
    pinned: VerifyingKey,
    algorithms: WebPkiSupportedAlgorithms,
}

impl fmt::Debug for PinnedServerVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PinnedServerVerifier")
            .field("pinned", &fingerprint(&self.pinned))
            .finish()
    }
}

impl ServerCertVerifier for PinnedServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let key = public_key_from_certificate(end_entity).map_err(bad_encoding)?;
        if key != self.pinned {
            return Err(certificate_error(TlsError::NotPinned {
                expected: fingerprint(&self.pinned),
                found: fingerprint(&key),
            }));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        tls12_refused()
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_handshake_signature(&self.algorithms, message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }
}

/// The coordinator's TLS configuration: its certificate from `identity`, client certificates
/// required and accepted only for `enrolled` keys (see the module doc).
pub fn server_config(
    identity: &NodeIdentity,
    enrolled: impl IntoIterator<Item = VerifyingKey>,
) -> Result<ServerConfig, TlsError> {
    let provider = crypto_provider();
    let verifier = EnrolledClientVerifier {
        enrolled: enrolled.into_iter().map(|key| key.to_bytes()).collect(),
        algorithms: provider.signature_verification_algorithms,
    };
    let (cert, key) = certificate(identity)?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(Arc::new(verifier))
        .with_single_cert(vec![cert], key)?;
    config.alpn_protocols = vec![ALPN.to_vec()];
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Ok(config)
}

/// A client's TLS configuration: its certificate from `identity`, and only `coordinator_key`
/// accepted for the server (see the module doc).
pub fn client_config(
    identity: &NodeIdentity,
    coordinator_key: &VerifyingKey,
) -> Result<ClientConfig, TlsError> {
    let provider = crypto_provider();
    let verifier = PinnedServerVerifier {
        pinned: *coordinator_key,
        algorithms: provider.signature_verification_algorithms,
    };
    let (cert, key) = certificate(identity)?;
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_client_auth_cert(vec![cert], key)?;
    config.alpn_protocols = vec![ALPN.to_vec()];
    config.resumption = rustls::client::Resumption::disabled();
    config.enable_sni = false;
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fingerprint_of_an_unenrolled_key_is_found_in_the_handshake_text() {
        let error = certificate_error(TlsError::NotEnrolled {
            fingerprint: "d4f21568de88becd".into(),
        });
        let text = format!("the cryptographic handshake failed: error 46: {error}");
        assert_eq!(not_enrolled_fingerprint(&text), Some("d4f21568de88becd"));
        let other = certificate_error(TlsError::NotEd25519).to_string();
        assert_eq!(not_enrolled_fingerprint(&other), None);
        let pinned = certificate_error(TlsError::NotPinned {
            expected: "1111222233334444".into(),
            found: "aaaabbbbccccdddd".into(),
        })
        .to_string();
        assert_eq!(
            not_pinned_fingerprints(&pinned),
            Some(("1111222233334444", "aaaabbbbccccdddd"))
        );
        assert_eq!(not_pinned_fingerprints(&other), None);
    }
    use ed25519_dalek::SigningKey;
    use rustls::{ClientConnection, ServerConnection};

    fn identity(id: &str, seed: u8) -> NodeIdentity {
        NodeIdentity::from_signing_key(Some(id), SigningKey::from_bytes(&[seed; 32])).unwrap()
    }

    /// Which side's `process_new_packets` failed, and with what.
    #[derive(Debug)]
    enum Failure {
        Client(rustls::Error),
        Server(rustls::Error),
    }

    /// Pumps TLS records between the two in memory until both finish the handshake or one
    /// fails.
    fn handshake(
        client: &mut ClientConnection,
        server: &mut ServerConnection,
    ) -> Result<(), Failure> {
        for _ in 0..20 {
            let mut buffer = Vec::new();
            while client.wants_write() {
                client.write_tls(&mut buffer).unwrap();
            }
            if !buffer.is_empty() {
                server.read_tls(&mut buffer.as_slice()).unwrap();
                server.process_new_packets().map_err(Failure::Server)?;
            }
            let mut buffer = Vec::new();
            while server.wants_write() {
                server.write_tls(&mut buffer).unwrap();
            }
            if !buffer.is_empty() {
                client.read_tls(&mut buffer.as_slice()).unwrap();
                client.process_new_packets().map_err(Failure::Client)?;
            }
            if !client.is_handshaking() && !server.is_handshaking() && !client.wants_write() {
                return Ok(());
            }
        }
        panic!("handshake did not finish");
    }

    fn connect(
        client_config: ClientConfig,
        server_config: ServerConfig,
    ) -> (ClientConnection, ServerConnection, Result<(), Failure>) {
        let mut client = ClientConnection::new(Arc::new(client_config), server_name()).unwrap();
        let mut server = ServerConnection::new(Arc::new(server_config)).unwrap();
        let result = handshake(&mut client, &mut server);
        (client, server, result)
    }

    #[test]
    fn enrolled_client_and_pinned_coordinator_connect() {
        let coordinator = identity("coordinator", 1);
        let alice = identity("alice", 2);
        let (client, server, result) = connect(
            client_config(&alice, &coordinator.public_key()).unwrap(),
            server_config(&coordinator, [alice.public_key()]).unwrap(),
        );
        result.unwrap();
        assert_eq!(server.alpn_protocol(), Some(ALPN));
        assert_eq!(
            client.protocol_version(),
            Some(rustls::ProtocolVersion::TLSv1_3)
        );
        // The suite both ends prefer (see `crypto_provider`).
        for suite in [
            client.negotiated_cipher_suite(),
            server.negotiated_cipher_suite(),
        ] {
            assert_eq!(
                suite.map(|s| s.suite()),
                Some(rustls::CipherSuite::TLS13_AES_128_GCM_SHA256)
            );
        }
        let seen_by_server = peer_public_key(server.peer_certificates().unwrap()).unwrap();
        assert_eq!(seen_by_server, alice.public_key());
        let seen_by_client = peer_public_key(client.peer_certificates().unwrap()).unwrap();
        assert_eq!(seen_by_client, coordinator.public_key());
        // As quinn hands it over.
        let boxed: Box<dyn Any> = Box::new(server.peer_certificates().unwrap().to_vec());
        assert_eq!(
            peer_public_key_from_identity(boxed.as_ref()).unwrap(),
            alice.public_key()
        );
        assert!(matches!(
            peer_public_key_from_identity(&42u32),
            Err(TlsError::UnexpectedIdentity)
        ));
    }

    #[test]
    fn unenrolled_client_is_rejected_by_the_coordinator() {
        let coordinator = identity("coordinator", 1);
        let alice = identity("alice", 2);
        let mallory = identity("mallory", 3);
        let (_, _, result) = connect(
            client_config(&mallory, &coordinator.public_key()).unwrap(),
            server_config(&coordinator, [alice.public_key()]).unwrap(),
        );
        match result {
            Err(Failure::Server(error)) => match rejection_reason(&error) {
                Some(TlsError::NotEnrolled { fingerprint }) => {
                    assert_eq!(fingerprint, &mallory.fingerprint());
                    assert!(
                        rejection_reason(&error)
                            .unwrap()
                            .to_string()
                            .contains("not enrolled")
                    );
                }
                other => panic!("expected NotEnrolled, got {other:?} from {error}"),
            },
            other => panic!("expected the server to refuse, got {other:?}"),
        }
    }

    #[test]
    fn client_pinning_another_key_rejects_the_coordinator() {
        let coordinator = identity("coordinator", 1);
        let impostor = identity("coordinator", 4);
        let alice = identity("alice", 2);
        let (_, _, result) = connect(
            client_config(&alice, &coordinator.public_key()).unwrap(),
            server_config(&impostor, [alice.public_key()]).unwrap(),
        );
        match result {
            Err(Failure::Client(error)) => assert!(
                matches!(
                    rejection_reason(&error),
                    Some(TlsError::NotPinned { found, .. }) if found == &impostor.fingerprint()
                ),
                "{error}"
            ),
            other => panic!("expected the client to refuse, got {other:?}"),
        }
    }

    /// A client that presents an enrolled participant's (public) certificate but holds another
    /// key: the certificate check passes, the handshake signature must not.
    #[test]
    fn stolen_certificate_without_its_key_is_rejected() {
        let coordinator = identity("coordinator", 1);
        let alice = identity("alice", 2);
        let mallory = identity("mallory", 3);
        let (alice_cert, _) = certificate(&alice).unwrap();
        let (_, mallory_key) = certificate(&mallory).unwrap();
        let provider = crypto_provider();
        let signing_key = provider.key_provider.load_private_key(mallory_key).unwrap();
        let stolen = rustls::sign::CertifiedKey::new(vec![alice_cert], signing_key);
        let verifier = PinnedServerVerifier {
            pinned: coordinator.public_key(),
            algorithms: provider.signature_verification_algorithms,
        };
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_client_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(stolen)));
        config.alpn_protocols = vec![ALPN.to_vec()];
        let (_, _, result) = connect(
            config,
            server_config(&coordinator, [alice.public_key()]).unwrap(),
        );
        assert!(
            matches!(
                result,
                Err(Failure::Server(rustls::Error::InvalidCertificate(
                    CertificateError::BadSignature
                )))
            ),
            "{result:?}"
        );
    }

    #[test]
    fn stolen_coordinator_certificate_is_rejected_by_the_client() {
        let coordinator = identity("coordinator", 1);
        let impostor = identity("impostor", 4);
        let alice = identity("alice", 2);
        let (coordinator_cert, _) = certificate(&coordinator).unwrap();
        let (_, impostor_key) = certificate(&impostor).unwrap();
        let provider = crypto_provider();
        let signing_key = provider
            .key_provider
            .load_private_key(impostor_key)
            .unwrap();
        let stolen = rustls::sign::CertifiedKey::new(vec![coordinator_cert], signing_key);
        let verifier = EnrolledClientVerifier {
            enrolled: [alice.public_key().to_bytes()].into_iter().collect(),
            algorithms: provider.signature_verification_algorithms,
        };
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_client_cert_verifier(Arc::new(verifier))
            .with_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(stolen)));
        config.alpn_protocols = vec![ALPN.to_vec()];
        let (_, _, result) = connect(
            client_config(&alice, &coordinator.public_key()).unwrap(),
            config,
        );
        assert!(
            matches!(
                result,
                Err(Failure::Client(rustls::Error::InvalidCertificate(
                    CertificateError::BadSignature
                )))
            ),
            "{result:?}"
        );
    }

    #[test]
    fn alpn_mismatch_fails_the_handshake() {
        let coordinator = identity("coordinator", 1);
        let alice = identity("alice", 2);
        let mut client = client_config(&alice, &coordinator.public_key()).unwrap();
        client.alpn_protocols = vec![b"mpcl/0".to_vec()];
        let (_, _, result) = connect(
            client,
            server_config(&coordinator, [alice.public_key()]).unwrap(),
        );
        assert!(
            matches!(
                result,
                Err(Failure::Server(rustls::Error::NoApplicationProtocol))
            ),
            "{result:?}"
        );
    }

    #[test]
    fn certificate_carries_the_identity_key() {
        let alice = identity("alice", 2);
        let (cert, _) = certificate(&alice).unwrap();
        assert_eq!(
            public_key_from_certificate(&cert).unwrap(),
            alice.public_key()
        );
        let garbage = CertificateDer::from(vec![0x30, 0x03, 0x01, 0x01, 0xff]);
        assert!(matches!(
            public_key_from_certificate(&garbage),
            Err(TlsError::BadCertificate(_))
        ));
    }
}
