//! `mpcl`: the command line. It parses arguments into the crates' plain config structs and calls
//! them; it holds no logic of its own.

mod allocator;
mod cli;
mod error_report;

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};

fn main() -> ExitCode {
    allocator::keep_freed_buffers();
    let matches = cli::Cli::command().get_matches();
    let cli = cli::Cli::from_arg_matches(&matches).unwrap_or_else(|error| error.exit());
    cli::init_tracing(cli.default_log_filter(), cli.log_format());
    match cli.run(&matches) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            if error_report::backtraces_wanted() {
                eprintln!("Error: {error:?}");
            } else {
                eprintln!("{}", error_report::report(&error));
            }
            ExitCode::FAILURE
        }
    }
}
