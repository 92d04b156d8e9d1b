//! `mpcl`: the command line. It parses arguments into the crates' plain config structs and calls
//! them; it holds no logic of its own.

mod cli;

use clap::Parser;

fn main() -> anyhow::Result<()> {
    let cli = cli::Cli::parse();
    cli::init_tracing(cli.default_log_filter());
    cli.run()
}
