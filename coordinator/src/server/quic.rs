//! The coordinator's QUIC endpoint: its UDP socket, the datagrams it accepts and the
//! transport settings of every connection.

use std::net::SocketAddr;

use mpcl_protocol::MAX_UDP_PAYLOAD_BYTES;

use super::{NetworkSettings, ServerError};

/// Most concurrent requests (streams) one connection may have open. A participant uses two
/// at a time (its parked `RequestWork` and an upload); the memory of large messages is bounded
/// by the server-wide upload permits, not by this. Not lower: quinn renews the peer's stream
/// credit once more than an eighth of this limit is used up, so at 4 every finished request
/// cost a `MAX_STREAMS` frame, often a datagram of its own (in `mpcl bench --only flower`: 61 ->
/// 55 datagram sends per connection over 5 rounds going from 4 to 16).
const MAX_STREAMS_PER_CONNECTION: u32 = 16;

/// The endpoint's settings: datagrams up to [`MAX_UDP_PAYLOAD_BYTES`] accepted (clients discover
/// that size where the path allows), quinn's defaults otherwise.
pub fn endpoint_config() -> quinn::EndpointConfig {
    let mut config = quinn::EndpointConfig::default();
    config
        .max_udp_payload_size(MAX_UDP_PAYLOAD_BYTES)
        .expect("MAX_UDP_PAYLOAD_BYTES is within QUIC's 1,200-65,527 bytes");
    config
}

/// The coordinator's UDP socket on `addr`, its receive buffer raised to `receive_buffer` bytes
/// where the operating system allows (see `[network] udp_receive_buffer_bytes`); a warning
/// names the limit when it does not.
pub fn udp_socket(addr: SocketAddr, receive_buffer: usize) -> std::io::Result<std::net::UdpSocket> {
    let socket = std::net::UdpSocket::bind(addr)?;
    let socket_ref = socket2::SockRef::from(&socket);
    // Refused or capped by the system: the socket still works, with a smaller buffer.
    let _ = socket_ref.set_recv_buffer_size(receive_buffer);
    // Linux reports twice what it grants (the kernel's bookkeeping share).
    let granted = socket_ref.recv_buffer_size()?;
    let granted = if cfg!(target_os = "linux") {
        granted / 2
    } else {
        granted
    };
    if granted < receive_buffer {
        tracing::warn!(
            asked = receive_buffer,
            granted,
            "the UDP receive buffer is smaller than asked: many clients uploading at once may \
             lose packets and stall rounds; raise the system's limit (on Linux: sysctl -w \
             net.core.rmem_max={receive_buffer})"
        );
    }
    Ok(socket)
}

/// The coordinator's QUIC transport settings: keep-alives, idle timeout and stream limits from
/// `network`, datagrams discovered up to [`MAX_UDP_PAYLOAD_BYTES`] where the path allows.
pub fn transport_config(network: &NetworkSettings) -> Result<quinn::TransportConfig, ServerError> {
    let mut transport = quinn::TransportConfig::default();
    transport.keep_alive_interval(Some(network.keep_alive()));
    transport.max_idle_timeout(Some(
        quinn::IdleTimeout::try_from(network.idle_timeout())
            .map_err(|e| ServerError::Settings(format!("idle timeout: {e}")))?,
    ));
    let window = quinn::VarInt::from_u64(network.stream_receive_window)
        .map_err(|e| ServerError::Settings(format!("stream receive window: {e}")))?;
    transport.stream_receive_window(window);
    transport.max_concurrent_bidi_streams(MAX_STREAMS_PER_CONNECTION.into());
    transport.max_concurrent_uni_streams(0u32.into());
    let mut discovery = quinn::MtuDiscoveryConfig::default();
    discovery.upper_bound(MAX_UDP_PAYLOAD_BYTES);
    transport.mtu_discovery_config(Some(discovery));
    Ok(transport)
}
