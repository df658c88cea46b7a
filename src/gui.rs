//! The desktop window. For now a placeholder that shows this computer's
//! host name and address; the full window is built on the same engine.

use std::process::ExitCode;

use peerconn::hostinfo::HostInfo;

slint::include_modules!();

pub fn run() -> ExitCode {
    let host = HostInfo::detect();
    let window = match AppWindow::new() {
        Ok(w) => w,
        Err(e) => {
            eprintln!("peerconn: cannot open the window: {e}");
            log::error!("cannot open the window: {e}");
            return ExitCode::FAILURE;
        }
    };
    window.set_host_name(host.host_name.clone().into());
    window.set_local_address(host.primary().to_string().into());
    log::info!("window opened (host {}, address {})", host.host_name, host.primary());
    if let Err(e) = window.run() {
        eprintln!("peerconn: the window failed: {e}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
