//! `peerconn`: with no arguments, the window; with a subcommand, the same
//! engine driven from a terminal (see `cli`).

mod cli;

use std::process::ExitCode;

use log::LevelFilter;

fn main() -> ExitCode {
    let launched = std::time::Instant::now();
    let parsed = cli::parse();
    // The command line reports what happens itself; the log's warnings
    // would say it twice.
    let echo = if matches!(parsed, Ok(cli::Launch::Command(_))) { LevelFilter::Error } else { LevelFilter::Warn };
    let _log = peerconn::logging::init(echo);
    match parsed {
        #[cfg(feature = "gui")]
        Ok(cli::Launch::Window { hidden }) => peerconn::gui::run(launched, hidden),
        #[cfg(not(feature = "gui"))]
        Ok(cli::Launch::Window { hidden }) => {
            let _ = (launched, hidden);
            eprintln!("this peerconn was built without the window; run `peerconn --help` for the commands");
            ExitCode::from(2)
        }
        Ok(cli::Launch::Command(command)) => cli::run(command),
        Err(code) => code,
    }
}
