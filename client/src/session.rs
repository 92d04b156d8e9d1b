//! One QUIC connection to the coordinator, admitted with `Hello`: the transport under the
//! participant node ([`crate::node`]) and under `mpcl status`.
//!
//! The coordinator's key is pinned ([`mpcl_protocol::tls::client_config`]). TLS 1.3 lets the
//! client finish its handshake before the coordinator has judged the client certificate, so an
//! unenrolled key only shows when the first request fails: [`Session::connect`] therefore does
//! the `Hello` round trip right away and reports a refusal as [`SessionError::Rejected`].
//!
//! Every request opens its own bidirectional stream, writes one frame, finishes the stream and
//! reads one reply ([`Session::request`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use mpcl_protocol::codec::{CodecError, MessageLimits};
use mpcl_protocol::framing::{encode_frame, read_message};
use mpcl_protocol::messages::{ClientMessage, CoordinatorMessage, GlobalState, Welcome};
use mpcl_protocol::tls::{TLS_SERVER_NAME, TlsError, client_config};
use mpcl_protocol::{MAX_UDP_PAYLOAD_BYTES, NodeIdentity, PROTOCOL_VERSION, RunId, VerifyingKey};
use quinn::crypto::rustls::QuicClientConfig;
use thiserror::Error;
use tracing::debug;

use mpcl_protocol::close_code::{CLOSE_FINISHED, CLOSE_PROTOCOL, CLOSE_REPLACED};

/// How to reach the coordinator.
#[derive(Clone, Debug)]
pub struct SessionConfig {
    /// The coordinator's address.
    pub coordinator: SocketAddr,
    /// The coordinator's public key (pinned: no other server is accepted).
    pub coordinator_key: VerifyingKey,
    /// This node's identity (its TLS certificate and the key that signs updates).
    pub identity: Arc<NodeIdentity>,
    /// QUIC keep-alive interval: keeps the connection up while training for minutes.
    pub keep_alive: Duration,
    /// QUIC idle timeout.
    pub idle_timeout: Duration,
    /// How long connecting (handshake and `Hello`) may take.
    pub connect_timeout: Duration,
    /// How long one request may wait for its reply (uploads included).
    pub request_timeout: Duration,
    /// This node's own cap on message size; the coordinator's announced limit is lowered to it.
    pub max_message_bytes: usize,
    /// Test hook: when set, a copy of every message payload this node sends (before TLS) is
    /// appended here.
    #[cfg(feature = "test-hooks")]
    pub sent_messages: Option<SentMessages>,
}

/// Test hook: where a session copies every message payload it sends.
#[cfg(feature = "test-hooks")]
pub type SentMessages = Arc<std::sync::Mutex<Vec<Vec<u8>>>>;

impl SessionConfig {
    /// Defaults: keep-alive 5 s, idle timeout 60 s, connect timeout 10 s, request timeout
    /// 10 min, messages up to 512 MiB.
    pub fn new(
        coordinator: SocketAddr,
        coordinator_key: VerifyingKey,
        identity: Arc<NodeIdentity>,
    ) -> Self {
        Self {
            coordinator,
            coordinator_key,
            identity,
            keep_alive: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(600),
            max_message_bytes: 512 << 20,
            #[cfg(feature = "test-hooks")]
            sent_messages: None,
        }
    }

    /// The QUIC side of a session: TLS with the coordinator's key pinned, keep-alives, the idle
    /// timeout, no streams opened by the coordinator, and datagrams discovered up to
    /// [`MAX_UDP_PAYLOAD_BYTES`] where the path allows.
    pub fn quic_config(&self) -> Result<quinn::ClientConfig, SessionError> {
        let tls = client_config(&self.identity, &self.coordinator_key)?;
        let crypto =
            QuicClientConfig::try_from(tls).map_err(|e| SessionError::Settings(e.to_string()))?;
        let mut transport = quinn::TransportConfig::default();
        transport.keep_alive_interval(Some(self.keep_alive));
        transport.max_idle_timeout(Some(
            quinn::IdleTimeout::try_from(self.idle_timeout)
                .map_err(|e| SessionError::Settings(format!("idle timeout: {e}")))?,
        ));
        transport.max_concurrent_bidi_streams(0u32.into());
        transport.max_concurrent_uni_streams(0u32.into());
        let mut discovery = quinn::MtuDiscoveryConfig::default();
        discovery.upper_bound(MAX_UDP_PAYLOAD_BYTES);
        transport.mtu_discovery_config(Some(discovery));
        let mut config = quinn::ClientConfig::new(Arc::new(crypto));
        config.transport_config(Arc::new(transport));
        Ok(config)
    }
}

/// A client endpoint on an ephemeral port of the coordinator's address family, accepting
/// datagrams up to [`MAX_UDP_PAYLOAD_BYTES`] (the coordinator discovers that size where the
/// path allows). Call it inside a tokio runtime.
pub fn client_endpoint(coordinator: SocketAddr) -> std::io::Result<quinn::Endpoint> {
    let bind: SocketAddr = if coordinator.is_ipv6() {
        "[::]:0".parse().expect("valid address")
    } else {
        "0.0.0.0:0".parse().expect("valid address")
    };
    let mut config = quinn::EndpointConfig::default();
    config
        .max_udp_payload_size(MAX_UDP_PAYLOAD_BYTES)
        .expect("MAX_UDP_PAYLOAD_BYTES is within QUIC's 1,200-65,527 bytes");
    let runtime =
        quinn::default_runtime().ok_or_else(|| std::io::Error::other("no async runtime found"))?;
    quinn::Endpoint::new(config, None, std::net::UdpSocket::bind(bind)?, runtime)
}

/// Errors of a session.
#[derive(Debug, Error)]
pub enum SessionError {
    /// The TLS configuration could not be built.
    #[error("cannot build the TLS configuration: {0}")]
    Tls(#[from] TlsError),
    /// A setting cannot be used.
    #[error("invalid connection settings: {0}")]
    Settings(String),
    /// The local UDP socket could not be opened.
    #[error("cannot open a UDP socket: {0}")]
    Socket(#[source] std::io::Error),
    /// The coordinator did not answer in time.
    #[error("no answer from the coordinator at {addr} within {timeout:?}")]
    Timeout { addr: SocketAddr, timeout: Duration },
    /// The server's certificate is not the pinned coordinator key (or TLS failed locally).
    #[error("the server at {addr} is not the expected coordinator: {reason}")]
    WrongCoordinator { addr: SocketAddr, reason: String },
    /// The coordinator refused this node (key not enrolled, or `Hello` refused).
    #[error("the coordinator refused this node: {reason}")]
    Rejected { reason: String },
    /// Another node with this key connected, and the coordinator closed this connection.
    #[error(
        "another client with this node's key connected to the coordinator, which closed this \
         connection: run one client per key (each participant has its own `mpcl keygen` key)"
    )]
    Replaced,
    /// The coordinator closed the connection because the run is over.
    #[error("the run is over (the coordinator closed the connection)")]
    RunOver,
    /// The connection failed or was closed.
    #[error("connection to the coordinator lost: {0}")]
    Connection(#[source] quinn::ConnectionError),
    /// A message could not be written or read.
    #[error("{0}")]
    Codec(#[from] CodecError),
    /// The coordinator answered with `Error`.
    #[error("the coordinator reported an error: {reason}")]
    Coordinator { reason: String },
    /// The coordinator answered something this request does not allow.
    #[error("unexpected reply to {request}: {reply}")]
    Unexpected {
        request: &'static str,
        reply: &'static str,
    },
}

impl SessionError {
    /// Whether reconnecting cannot help (the node is refused or talks to the wrong server).
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            Self::Tls(_)
                | Self::Settings(_)
                | Self::WrongCoordinator { .. }
                | Self::Rejected { .. }
                | Self::Replaced
        )
    }
}

fn is_crypto(code: u64) -> bool {
    code & !0xff == 0x100
}

/// Sorts a connection error into what it means for this node.
fn classify(error: quinn::ConnectionError, addr: SocketAddr) -> SessionError {
    match &error {
        quinn::ConnectionError::TransportError(transport)
            if is_crypto(u64::from(transport.code)) =>
        {
            let reason = match mpcl_protocol::tls::not_pinned_fingerprints(&transport.reason) {
                Some((expected, found)) => format!(
                    "it presented the key {found}, but this node expects the coordinator key \
                     {expected} (the --coordinator-key file): check the address, or ask the \
                     coordinator's operator for its public_key.hex"
                ),
                None => transport.reason.clone(),
            };
            SessionError::WrongCoordinator { addr, reason }
        }
        quinn::ConnectionError::ConnectionClosed(close)
            if is_crypto(u64::from(close.error_code)) =>
        {
            let text = String::from_utf8_lossy(&close.reason);
            if let Some(fingerprint) = mpcl_protocol::tls::not_enrolled_fingerprint(&text) {
                return SessionError::Rejected {
                    reason: format!(
                        "this node's key {fingerprint} is not in the coordinator's enrolment file: \
                         send the [[participant]] lines printed by `mpcl keygen` to whoever runs \
                         the coordinator"
                    ),
                };
            }
            SessionError::Rejected {
                reason: format!(
                    "TLS handshake refused ({}): is this node's public key in the coordinator's enrolment file?",
                    close
                ),
            }
        }
        quinn::ConnectionError::ApplicationClosed(close) => {
            let code = close.error_code.into_inner();
            let reason = String::from_utf8_lossy(&close.reason).into_owned();
            if code == u64::from(CLOSE_PROTOCOL) {
                SessionError::Rejected { reason }
            } else if code == u64::from(CLOSE_REPLACED) {
                SessionError::Replaced
            } else if code == u64::from(CLOSE_FINISHED) && reason == "run finished" {
                SessionError::RunOver
            } else {
                SessionError::Connection(error)
            }
        }
        _ => SessionError::Connection(error),
    }
}

fn stream_error(
    error: CodecError,
    connection: &quinn::Connection,
    addr: SocketAddr,
) -> SessionError {
    // A stream fails because its connection did: report the connection's reason.
    match connection.close_reason() {
        Some(reason) => classify(reason, addr),
        None => SessionError::Codec(error),
    }
}

/// A connection admitted by the coordinator.
pub struct Session {
    endpoint: quinn::Endpoint,
    connection: quinn::Connection,
    welcome: Welcome,
    limits: MessageLimits,
    config: SessionConfig,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("coordinator", &self.config.coordinator)
            .field("participant", &self.welcome.participant_id)
            .finish_non_exhaustive()
    }
}

impl Session {
    /// Connects, says `Hello` and returns the admitted session with the coordinator's `Welcome`.
    pub async fn connect(config: &SessionConfig) -> Result<Self, SessionError> {
        let addr = config.coordinator;
        let client_config = config.quic_config()?;
        let endpoint = client_endpoint(addr).map_err(SessionError::Socket)?;
        let connect = async {
            let connecting = endpoint
                .connect_with(client_config, addr, TLS_SERVER_NAME)
                .map_err(|e| SessionError::Settings(e.to_string()))?;
            let connection = connecting.await.map_err(|e| classify(e, addr))?;
            let hello = ClientMessage::Hello {
                participant_id: config.identity.id().to_string(),
                protocol_version: PROTOCOL_VERSION,
            };
            let reply = exchange(&connection, &hello, &MessageLimits::CONTROL, config).await?;
            Ok::<_, SessionError>((connection, reply))
        };
        let (connection, reply) = match tokio::time::timeout(config.connect_timeout, connect).await
        {
            Ok(Ok(done)) => done,
            Ok(Err(error)) => {
                endpoint.close(0u32.into(), b"");
                return Err(error);
            }
            Err(_) => {
                endpoint.close(0u32.into(), b"");
                return Err(SessionError::Timeout {
                    addr,
                    timeout: config.connect_timeout,
                });
            }
        };
        let welcome = match reply {
            CoordinatorMessage::Welcome(welcome) => *welcome,
            CoordinatorMessage::Error { reason } => {
                connection.close(0u32.into(), b"refused");
                return Err(SessionError::Rejected { reason });
            }
            other => {
                connection.close(0u32.into(), b"unexpected reply");
                return Err(SessionError::Unexpected {
                    request: "Hello",
                    reply: other.kind(),
                });
            }
        };
        let announced = usize::try_from(welcome.max_message_bytes).unwrap_or(usize::MAX);
        let own = MessageLimits::new(config.max_message_bytes)
            .map_err(|e| SessionError::Settings(e.to_string()))?;
        let limits = MessageLimits::new(announced.clamp(1, mpcl_protocol::HARD_MAX_MESSAGE_BYTES))
            .map_err(|e| SessionError::Settings(e.to_string()))?
            .min(own);
        debug!(
            participant = %welcome.participant_id,
            max_message_bytes = limits.max_message_bytes,
            "admitted by the coordinator"
        );
        Ok(Self {
            endpoint,
            connection,
            welcome,
            limits,
            config: config.clone(),
        })
    }

    /// The coordinator's `Welcome`.
    pub fn welcome(&self) -> &Welcome {
        &self.welcome
    }

    /// The message limits in force (the coordinator's, capped by this node's own).
    pub fn limits(&self) -> MessageLimits {
        self.limits
    }

    /// The underlying QUIC connection (tests use it to send raw frames).
    pub fn connection(&self) -> &quinn::Connection {
        &self.connection
    }

    /// Sends one request and returns the reply (an `Error` reply is returned as a message, not
    /// as an error).
    pub async fn request(
        &self,
        message: &ClientMessage,
    ) -> Result<CoordinatorMessage, SessionError> {
        self.request_within(message, self.config.request_timeout)
            .await
    }

    /// [`Session::request`] with its own timeout (secure-aggregation steps are answered only
    /// when the step closes, which may be up to the round's deadline).
    pub async fn request_within(
        &self,
        message: &ClientMessage,
        timeout: Duration,
    ) -> Result<CoordinatorMessage, SessionError> {
        let addr = self.config.coordinator;
        match tokio::time::timeout(
            timeout,
            exchange(&self.connection, message, &self.limits, &self.config),
        )
        .await
        {
            Ok(result) => result,
            Err(_) => Err(SessionError::Timeout { addr, timeout }),
        }
    }

    /// Asks for the run's model (after `Finished`; see [`ClientMessage::RequestFinalModel`]):
    /// the run id, the round the model is from, and its state.
    pub async fn final_model(&self) -> Result<(RunId, u64, GlobalState), SessionError> {
        match self.request(&ClientMessage::RequestFinalModel).await? {
            CoordinatorMessage::FinalModel {
                run_id,
                round,
                state,
            } => Ok((run_id, round, state)),
            CoordinatorMessage::Error { reason } => Err(SessionError::Coordinator { reason }),
            other => Err(SessionError::Unexpected {
                request: "RequestFinalModel",
                reply: other.kind(),
            }),
        }
    }

    /// How long one request may wait for its reply.
    pub fn request_timeout(&self) -> Duration {
        self.config.request_timeout
    }

    /// Says `Goodbye` (briefly waiting for the answer) and closes the connection cleanly.
    pub async fn close(self) {
        let goodbye = tokio::time::timeout(
            Duration::from_secs(2),
            exchange(
                &self.connection,
                &ClientMessage::Goodbye,
                &MessageLimits::CONTROL,
                &self.config,
            ),
        )
        .await;
        if let Ok(Err(error)) = goodbye {
            debug!(%error, "no answer to Goodbye");
        }
        self.connection.close(0u32.into(), b"goodbye");
        let _ = tokio::time::timeout(Duration::from_secs(2), self.endpoint.wait_idle()).await;
    }

    /// Drops the connection without a `Goodbye` (after an error).
    pub fn abort(self) {
        self.connection.close(0u32.into(), b"client error");
        self.endpoint.close(0u32.into(), b"");
    }
}

/// One request/reply on a fresh bidirectional stream.
async fn exchange(
    connection: &quinn::Connection,
    message: &ClientMessage,
    limits: &MessageLimits,
    config: &SessionConfig,
) -> Result<CoordinatorMessage, SessionError> {
    let addr = config.coordinator;
    let frame = encode_frame(message, limits)?;
    #[cfg(feature = "test-hooks")]
    if let Some(sent) = &config.sent_messages {
        sent.lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(frame[mpcl_protocol::framing::FRAME_HEADER_BYTES..].to_vec());
    }
    let (mut send, mut recv) = connection.open_bi().await.map_err(|e| classify(e, addr))?;
    // One write, the buffer handed over without a copy (see `mpcl_protocol::framing`).
    send.write_chunk(frame.into()).await.map_err(|e| {
        stream_error(
            CodecError::Io {
                action: "writing a request",
                source: e.into(),
            },
            connection,
            addr,
        )
    })?;
    send.finish().map_err(|e| {
        stream_error(
            CodecError::Io {
                action: "finishing a request",
                source: std::io::Error::other(e),
            },
            connection,
            addr,
        )
    })?;
    read_message::<_, CoordinatorMessage>(&mut recv, limits)
        .await
        .map_err(|e| stream_error(e, connection, addr))
}

#[cfg(test)]
mod tests {
    use super::*;
    use mpcl_protocol::close_code::CLOSE_SHUTDOWN;

    fn addr() -> SocketAddr {
        "127.0.0.1:1".parse().unwrap()
    }

    #[test]
    fn crypto_closes_are_fatal_and_shutdowns_are_not() {
        let refused = quinn::ConnectionError::ConnectionClosed(quinn::ConnectionClose {
            error_code: quinn::TransportErrorCode::crypto(42),
            frame_type: None,
            reason: Default::default(),
        });
        let error = classify(refused, addr());
        assert!(matches!(error, SessionError::Rejected { .. }) && error.is_fatal());

        let app = |code: u32, reason: &'static [u8]| {
            quinn::ConnectionError::ApplicationClosed(quinn::ApplicationClose {
                error_code: code.into(),
                reason: reason.into(),
            })
        };
        let error = classify(app(CLOSE_SHUTDOWN, b"coordinator shutting down"), addr());
        assert!(matches!(error, SessionError::Connection(_)) && !error.is_fatal());
        assert!(matches!(
            classify(app(CLOSE_FINISHED, b"run finished"), addr()),
            SessionError::RunOver
        ));
        // A connection dropped without a reason (a crashed coordinator) is not "finished".
        assert!(matches!(
            classify(app(0, b""), addr()),
            SessionError::Connection(_)
        ));
        assert!(classify(app(CLOSE_PROTOCOL, b"bad hello"), addr()).is_fatal());
        let replaced = classify(app(CLOSE_REPLACED, b"replaced"), addr());
        assert!(replaced.is_fatal() && replaced.to_string().contains("one client per key"));
        assert!(!classify(quinn::ConnectionError::TimedOut, addr()).is_fatal());
    }
}
