//! Faults a node can inject into its own behaviour, so that the process-level fault tests
//! (`tests/processes/` in the root package) can make a real `mpcl client` stall or drop its
//! connection at a precise point of a round. Nothing here is on by default; the command line
//! exposes these only through hidden `--test-*` flags.

use std::time::Duration;

use mpcl_protocol::codec::{self, MessageLimits};
use mpcl_protocol::framing::FRAME_HEADER_BYTES;
use mpcl_protocol::messages::ClientMessage;
use tokio::io::AsyncWriteExt;

use crate::session::{Session, SessionError};

/// Which faults to inject (all off by default).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FaultInjection {
    /// Sleep this long between training and uploading every update (a stalled client: slow
    /// disk, suspended laptop).
    pub delay_before_upload: Option<Duration>,
    /// On the first upload only, send the frame header and half of the update, then close the
    /// connection as if the network had dropped; the node then reconnects as usual.
    pub drop_connection_mid_upload: bool,
    /// In secure-aggregation round N, vanish (drop the connection without a word) right after
    /// the coordinator confirmed the masked input, before signing the survivor list; the node
    /// reconnects after its backoff.
    pub vanish_after_masked_input: Option<u64>,
}

/// Opens a request stream, writes `message`'s frame header and the first half of its payload,
/// lets the bytes go out, and closes the connection. Returns the bytes written.
pub(crate) async fn send_half_then_disconnect(
    session: &Session,
    message: &ClientMessage,
) -> Result<usize, SessionError> {
    let limits: MessageLimits = session.limits();
    let payload = codec::encode_message(message, &limits)?;
    let length = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    let half = payload.len() / 2;
    let connection = session.connection();
    let (mut send, _recv) = connection
        .open_bi()
        .await
        .map_err(SessionError::Connection)?;
    let io = |action: &'static str| {
        move |source: std::io::Error| SessionError::Codec(codec::CodecError::Io { action, source })
    };
    AsyncWriteExt::write_all(&mut send, &length.to_le_bytes())
        .await
        .map_err(io("writing a frame header"))?;
    AsyncWriteExt::write_all(&mut send, &payload[..half])
        .await
        .map_err(io("writing half a frame"))?;
    AsyncWriteExt::flush(&mut send)
        .await
        .map_err(io("flushing half a frame"))?;
    // Give the coordinator time to receive what was written before the connection goes.
    tokio::time::sleep(Duration::from_millis(300)).await;
    connection.close(0u32.into(), b"test fault: dropped mid-upload");
    Ok(FRAME_HEADER_BYTES + half)
}
