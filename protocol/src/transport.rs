//! What both ends ask of QUIC beyond TLS: the largest datagram.
//!
//! quinn starts every connection at 1,200-byte datagrams and by default discovers paths only up
//! to 1,452 bytes (a 1,500-byte Ethernet frame). A round moves the whole global state down and an
//! update up, and much of a round's CPU on both ends is per-datagram work: sealing, opening and
//! tracking packets, acknowledgements, system calls. So each end discovers sizes up to
//! [`MAX_UDP_PAYLOAD_BYTES`] where the path carries them (loopback, where the simulation harness
//! and the benchmarks run; LANs with jumbo frames). On an ordinary Internet path the probes are
//! lost and a connection stays at what the path allows, as before.

/// The largest UDP payload either end sends (where the path allows) and accepts.
///
/// Each end advertises what it accepts and the other sends no more, so both read it from here.
/// Two limits bound it from above: quinn writes up to 10 datagrams at once with segmentation
/// offload, and the kernel caps such a write at 64 KiB (10 x 6,553 bytes); and quinn gives each
/// endpoint a receive buffer of this size x 64 segments x 32 datagrams (8 MiB here, 3 MiB at
/// its default), allocated once per endpoint. On loopback it cut quinn's own server CPU per
/// client-round by about 30% at the default model's message sizes (NOTES.md, session 14).
pub const MAX_UDP_PAYLOAD_BYTES: u16 = 4096;

// QUIC's range for a UDP payload size, and the segmentation-offload limit above.
const _: () = assert!(MAX_UDP_PAYLOAD_BYTES >= 1200 && MAX_UDP_PAYLOAD_BYTES <= 6553);
