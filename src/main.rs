//! `peerconn`: with no arguments, the window; with a subcommand, the same
//! engine driven from a terminal (see `cli`).

mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    let launched = std::time::Instant::now();
    let _log = peerconn::logging::init();
    match cli::parse() {
        Ok(None) => peerconn::gui::run(launched),
        Ok(Some(command)) => cli::run(command),
        Err(code) => code,
    }
}
