//! Tests that run the real `mpcl` executable as separate processes (coordinator, clients,
//! simulations) on 127.0.0.1. One test target, one module per concern.

mod simulate_network;
