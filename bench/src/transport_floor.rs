//! The floor under any round over QUIC on this machine: quinn alone, with mpcl's QUIC
//! configuration (TLS 1.3 with ed25519 certificates both ways, the coordinator's and the
//! clients' transport and endpoint settings) and one endpoint per client as mpcl's participants
//! have, moving a round's bytes: per client a small request answered by
//! as many bytes as mpcl's `StartRound`, then as many as mpcl's signed update answered by a
//! small acknowledgement, over two streams, every client at once. No encoding, signatures,
//! validation or aggregation.
//!
//! Flower's figures ([`crate::flower::FLOWER_OVERHEAD_SECONDS`]) come from its simulation mode,
//! which moves no bytes over any network; when this floor alone is above a tenth of Flower's
//! overhead, no protocol over QUIC can reach the 1/10 on this machine. The connections
//! are set up before the timed rounds (mpcl's figures amortise the handshakes over 5 rounds).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use mpcl_client::SessionConfig;
use mpcl_client::session::client_endpoint;
use mpcl_coordinator::server::{NetworkSettings, endpoint_config, transport_config, udp_socket};
use mpcl_protocol::{TLS_SERVER_NAME, server_config};
use quinn::crypto::rustls::QuicServerConfig;
use serde::{Deserialize, Serialize};

use crate::BenchError;
use crate::federation_setup::BenchKeys;
use crate::stats::{median, process_cpu_seconds, threads_cpu_seconds};

/// Bytes of the request and of the acknowledgement.
const SMALL: usize = 64;

/// One client count.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FloorRow {
    pub clients: usize,
    pub rounds: u64,
    /// Bytes each client receives per round (mpcl's `StartRound` message on the same rounds).
    pub bytes_down: usize,
    /// Bytes each client sends per round (mpcl's signed update message).
    pub bytes_up: usize,
    /// Median round wall time (every client's two exchanges).
    pub round_seconds: f64,
    /// CPU time of the whole process (server and clients) over the rounds, per client-round.
    pub cpu_per_client_round: f64,
    /// CPU time of the server's threads alone over the rounds, per client-round: the floor
    /// under the coordinator's CPU per client-round.
    #[serde(default)]
    pub server_cpu_per_client_round: Option<f64>,
    /// The largest datagram payload the server's and the clients' connections had discovered
    /// by the end (the smallest over the connections): down (server to client) and up.
    #[serde(default)]
    pub datagram_bytes: Option<(u16, u16)>,
}

/// Name of the floor server runtime's threads (its CPU time is theirs).
const SERVER_THREAD: &str = "floor-server";

fn setup(what: &str, error: impl std::fmt::Display) -> BenchError {
    BenchError::setup(&format!("transport floor: {what}"), error)
}

/// Runs `rounds` rounds of `clients` clients moving `bytes_down` and `bytes_up` bytes each.
pub fn measure(
    clients: usize,
    rounds: u64,
    bytes_down: usize,
    bytes_up: usize,
) -> Result<FloorRow, BenchError> {
    let BenchKeys {
        coordinator: server_identity,
        participants,
        ..
    } = BenchKeys::new(clients, "transport floor")?;
    let tls = server_config(
        &server_identity,
        participants.iter().map(|p| p.public_key()),
    )
    .map_err(|e| setup("server TLS", e))?;
    let crypto = QuicServerConfig::try_from(tls).map_err(|e| setup("server QUIC", e))?;
    let network = NetworkSettings::default();
    let mut server_config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    server_config.transport_config(Arc::new(
        transport_config(&network).map_err(|e| setup("server transport", e))?,
    ));

    // The server on its own runtime, as the bench's coordinator.
    let server_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name(SERVER_THREAD)
        .enable_all()
        .build()
        .map_err(|e| setup("tokio runtime", e))?;
    let listen: SocketAddr = "127.0.0.1:0".parse().expect("valid address");
    // The coordinator's socket, with its receive buffer.
    let endpoint = server_runtime
        .block_on(async {
            quinn::Endpoint::new(
                endpoint_config(),
                Some(server_config),
                udp_socket(listen, network.udp_receive_buffer_bytes)?,
                Arc::new(quinn::TokioRuntime),
            )
        })
        .map_err(|e| setup("server endpoint", e))?;
    let addr = endpoint
        .local_addr()
        .map_err(|e| setup("server address", e))?;
    let down = Arc::new(vec![7u8; bytes_down]);
    let served = Arc::new(Mutex::new(Vec::new()));
    server_runtime.spawn(serve(endpoint.clone(), down, served.clone()));

    let client_runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| setup("tokio runtime", e))?;
    let result = client_runtime.block_on(async {
        let mut connections = Vec::with_capacity(clients);
        for participant in &participants {
            let session =
                SessionConfig::new(addr, server_identity.public_key(), Arc::clone(participant));
            let mut endpoint = client_endpoint(addr).map_err(|e| setup("client endpoint", e))?;
            endpoint.set_default_client_config(
                session.quic_config().map_err(|e| setup("client QUIC", e))?,
            );
            let connection = endpoint
                .connect(addr, TLS_SERVER_NAME)
                .map_err(|e| setup("connect", e))?
                .await
                .map_err(|e| setup("handshake", e))?;
            connections.push((endpoint, connection));
        }
        let up = Arc::new(vec![9u8; bytes_up]);
        let cpu = process_cpu_seconds();
        let server_cpu = threads_cpu_seconds(SERVER_THREAD);
        let mut walls = Vec::new();
        for _ in 0..rounds {
            let started = Instant::now();
            let exchanges: Vec<_> = connections
                .iter()
                .map(|(_, connection)| tokio::spawn(client_round(connection.clone(), up.clone())))
                .collect();
            for exchange in exchanges {
                exchange
                    .await
                    .map_err(|e| setup("client task", e))?
                    .map_err(|e| setup("exchange", e))?;
            }
            walls.push(started.elapsed().as_secs_f64());
        }
        let cpu = process_cpu_seconds() - cpu;
        let server_cpu = server_cpu
            .zip(threads_cpu_seconds(SERVER_THREAD))
            .map(|(before, after)| after - before);
        let up = smallest_datagram(connections.iter().map(|(_, connection)| connection));
        let down = smallest_datagram(served.lock().unwrap_or_else(|e| e.into_inner()).iter());
        for (endpoint, connection) in &connections {
            connection.close(0u32.into(), b"done");
            endpoint.close(0u32.into(), b"done");
        }
        Ok::<_, BenchError>((walls, cpu, server_cpu, down.zip(up)))
    });
    endpoint.close(0u32.into(), b"done");
    let (walls, cpu, server_cpu, datagram_bytes) = result?;
    let client_rounds = clients as f64 * rounds as f64;
    Ok(FloorRow {
        clients,
        rounds,
        bytes_down,
        bytes_up,
        round_seconds: median(&walls),
        cpu_per_client_round: cpu / client_rounds,
        server_cpu_per_client_round: server_cpu.map(|cpu| cpu / client_rounds),
        datagram_bytes,
    })
}

/// The smallest of the connections' current datagram payload sizes (`None` for none).
fn smallest_datagram<'a>(connections: impl Iterator<Item = &'a quinn::Connection>) -> Option<u16> {
    connections
        .map(|connection| connection.stats().path.current_mtu)
        .min()
}

/// One client's round: the request answered by the global state, the update answered by an
/// acknowledgement.
async fn client_round(connection: quinn::Connection, up: Arc<Vec<u8>>) -> Result<(), String> {
    for payload in [&[1u8; SMALL][..], up.as_slice()] {
        let (mut send, mut recv) = connection.open_bi().await.map_err(|e| e.to_string())?;
        send.write_all(payload).await.map_err(|e| e.to_string())?;
        send.finish().map_err(|e| e.to_string())?;
        recv.read_to_end(usize::MAX)
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Answers every stream: a small request with `down`, anything larger with an acknowledgement.
/// Every connection is also kept in `served`, for its statistics.
async fn serve(
    endpoint: quinn::Endpoint,
    down: Arc<Vec<u8>>,
    served: Arc<Mutex<Vec<quinn::Connection>>>,
) {
    while let Some(incoming) = endpoint.accept().await {
        let down = down.clone();
        let served = served.clone();
        tokio::spawn(async move {
            let Ok(connection) = incoming.await else {
                return;
            };
            served
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(connection.clone());
            while let Ok((mut send, mut recv)) = connection.accept_bi().await {
                let down = down.clone();
                tokio::spawn(async move {
                    let Ok(request) = recv.read_to_end(usize::MAX).await else {
                        return;
                    };
                    let reply: &[u8] = if request.len() <= SMALL {
                        &down
                    } else {
                        &[2u8; SMALL]
                    };
                    if send.write_all(reply).await.is_ok() {
                        let _ = send.finish();
                        let _ = send.stopped().await;
                    }
                });
            }
        });
    }
}
