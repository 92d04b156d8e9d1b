//! Where the path carries them, both ends send datagrams larger than a 1,500-byte Ethernet path
//! allows (`mpcl_protocol::MAX_UDP_PAYLOAD_BYTES`): loopback does, so a real coordinator and a
//! real session find them here. The client's own discovery shows in its path statistics; the
//! coordinator's shows in the size of the datagrams that bring the round's state down.

use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use mpcl_client::Session;
use mpcl_protocol::MAX_UDP_PAYLOAD_BYTES;
use mpcl_protocol::messages::{ClientMessage, CoordinatorMessage};
use mpcl_tests::{Federation, Keys, run_config, session_config, start_run};

/// The largest datagram payload a 1,500-byte Ethernet path carries over IPv6, quinn's default
/// ceiling for either IP version: 1,500 - 40 (IPv6 header) - 8 (UDP header).
const ETHERNET_PAYLOAD: u16 = 1452;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_ends_discover_datagrams_larger_than_ethernet_over_loopback() -> anyhow::Result<()> {
    let federation = Federation::synthetic(1);
    let keys = Keys::new(&["alice"]);
    let out = tempfile::tempdir()?;
    let server = start_run(&federation, &keys, run_config(1, 1), [4; 16], out.path())?;
    let session = Session::connect(&session_config(
        server.addr,
        &keys,
        keys.participants[0].clone(),
    ))
    .await?;

    // Up: the client probes its way past the Ethernet size, to the shared ceiling at most.
    let connection = session.connection();
    let started = Instant::now();
    while connection.stats().path.current_mtu <= ETHERNET_PAYLOAD {
        ensure!(
            started.elapsed() < Duration::from_secs(20),
            "the client's datagrams stayed at {} bytes",
            connection.stats().path.current_mtu
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let up = connection.stats().path.current_mtu;
    ensure!(
        up <= MAX_UDP_PAYLOAD_BYTES,
        "the client sends {up}-byte datagrams"
    );
    // The coordinator starts probing first (it confirms the handshake first) and needs as many
    // round trips; give its last probes time to land even on a loaded machine.
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Down: the round's state (tens of KB) arrives in datagrams that average more than the
    // Ethernet size, so some of them are larger than it.
    let before = connection.stats().udp_rx;
    let reply = session
        .request(&ClientMessage::RequestWork {
            last_completed_round: None,
        })
        .await?;
    let after = connection.stats().udp_rx;
    let CoordinatorMessage::StartRound { state, .. } = reply else {
        bail!("expected the first round, got {}", reply.kind());
    };
    let bytes = after.bytes - before.bytes;
    let datagrams = after.datagrams - before.datagrams;
    ensure!(
        bytes > 4 * state.parameters.value_count() as u64,
        "the state came in {bytes} bytes"
    );
    let mean = bytes / datagrams.max(1);
    ensure!(
        mean > u64::from(ETHERNET_PAYLOAD),
        "the state came in {datagrams} datagrams of {mean} bytes on average"
    );

    server.shutdown.cancel();
    server
        .task
        .await
        .context("the coordinator's task")?
        .context("the coordinator")?;
    Ok(())
}
