//! `mpcl`: the command line. It parses arguments into the crates' plain config structs and calls
//! them; it holds no logic of its own.

mod cli;

use clap::Parser;

fn main() -> anyhow::Result<()> {
    cli::init_tracing();
    cli::Cli::parse().run()
}
