//! Process-level tests: the real `mpcl` binary run as a coordinator, as clients and as a
//! networked simulation on 127.0.0.1, with faults injected from outside (signals, files damaged
//! on disk) or through the client's hidden `--test-*` flags. One module per group of scenarios;
//! `support` is shared.

mod support;

mod checkpoint_faults;
mod client_faults;
mod coordinator_faults;
mod dashboard;
mod model_files;
mod operating;
mod operations;
mod simulate_jobs;
mod simulate_network;
