//! The desktop window: Slint views in `ui/`, driven by the same engine as
//! the command line.
//!
//! Threads: UI callbacks only send commands to the engine (non-blocking); a
//! `slint::Timer` drains the engine's events every 50 ms and updates the
//! models; file pickers run on a worker thread and post their result back
//! with `invoke_from_event_loop`. The UI thread never waits on the network
//! or the disk. All Slint types are touched here and in `model.rs` only.

mod chatlog;
mod model;
pub mod settings;

use std::cell::RefCell;
use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;
use std::rc::Rc;
use std::time::Duration;

use slint::ComponentHandle;

use crate::hostinfo::HostInfo;
use crate::net::{pairing, Engine, EngineConfig};

use model::Peersockets;
pub use settings::Settings;

slint::include_modules!();

/// How often engine events are drained.
const DRAIN_EVERY: Duration = Duration::from_millis(50);

/// The window with its engine and the timer that feeds it. Dropping it
/// stops the timer and the engine (peers are told, partial files removed).
pub struct Gui {
    pub window: AppWindow,
    /// The only strong reference to the state (and so to the engine).
    _state: Rc<RefCell<Peersockets>>,
    timer: slint::Timer,
}

impl Gui {
    /// Builds the window on the current thread (which must run Slint's
    /// event loop) and starts its engine.
    pub fn new(config: EngineConfig, settings: Settings, host: &HostInfo) -> Result<Gui, String> {
        let engine = Engine::with_config(config).map_err(|e| format!("cannot start the network engine: {e}"))?;
        let window = AppWindow::new().map_err(|e| format!("cannot open the window: {e}"))?;
        match std::env::var("PEERCONN_THEME").as_deref() {
            Ok("dark") => window.invoke_use_dark(true),
            Ok("light") => window.invoke_use_dark(false),
            _ => {} // follow the system
        }
        let app = Rc::new(RefCell::new(Peersockets::new(engine, window.as_weak(), settings)));
        wire(&window, &app, host);
        let timer = slint::Timer::default();
        let drain = Shared(Rc::downgrade(&app));
        timer.start(slint::TimerMode::Repeated, DRAIN_EVERY, move || drain.with(|p| p.drain()));
        Ok(Gui { window, _state: app, timer })
    }
}

impl Drop for Gui {
    fn drop(&mut self) {
        self.timer.stop();
        let _ = self.window.hide();
        // Callbacks and the timer hold only weak references: the engine goes
        // with `app`, saying bye to every peer and removing partial files.
    }
}

/// Without a GPU (a virtual machine, a remote desktop) Mesa's software
/// OpenGL draws every frame of the window whole: a transfer's progress bar
/// alone then took a core, and a 6.4 GB download into the window ran at
/// 163 MB/s instead of 258–341 MB/s. Slint's own software renderer redraws
/// only what changed, so it is used when Linux shows no GPU (no
/// `/dev/dri/renderD*`, no `/dev/nvidia0`), unless the person chose with
/// `SLINT_BACKEND`.
fn choose_renderer() {
    if !cfg!(target_os = "linux") || std::env::var_os("SLINT_BACKEND").is_some() {
        return;
    }
    // NVIDIA's own driver may have no render node without its DRM module.
    let gpu = std::fs::read_dir("/dev/dri")
        .is_ok_and(|dir| dir.flatten().any(|e| e.file_name().to_string_lossy().starts_with("renderD")))
        || std::path::Path::new("/dev/nvidia0").exists();
    if gpu {
        return;
    }
    let software = slint::BackendSelector::new().backend_name("winit".into()).renderer_name("software".into());
    match software.select() {
        Ok(()) => log::info!("no GPU found: the window draws with Slint's software renderer"),
        Err(e) => log::warn!("no GPU found, and Slint's software renderer is not available: {e}"),
    }
}

/// Runs the window until it is closed. `launched` is when the process
/// started, for the first-frame time written to the log.
pub fn run(launched: std::time::Instant) -> ExitCode {
    let host = HostInfo::detect();
    let settings = Settings::load();
    let config = match EngineConfig::installed() {
        Ok(config) => EngineConfig { downloads: settings.downloads.clone(), ..config },
        Err(e) => {
            let e = format!("cannot read this installation's key: {e}");
            eprintln!("peerconn: {e}");
            log::error!("{e}");
            return ExitCode::FAILURE;
        }
    };
    choose_renderer();
    let gui = match Gui::new(config, settings, &host) {
        Ok(gui) => gui,
        Err(e) => {
            eprintln!("peerconn: {e}");
            log::error!("{e}");
            return ExitCode::FAILURE;
        }
    };
    log::info!("window opened (host {}, address {})", host.host_name, host.primary());
    report_first_frame(&gui.window, launched);
    let result = gui.window.run();
    drop(gui);
    if let Err(e) = result {
        eprintln!("peerconn: the window failed: {e}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

fn wire(window: &AppWindow, app: &Rc<RefCell<Peersockets>>, host: &HostInfo) {
    let hosts = window.global::<HostAdapter>();
    hosts.set_host_name(host.host_name.clone().into());
    hosts.set_local_address(host.primary().to_string().into());
    let addresses: Vec<slint::SharedString> = host.addresses.iter().map(|a| a.to_string().into()).collect();
    hosts.set_addresses(Rc::new(slint::VecModel::from(addresses)).into());
    hosts.set_fingerprint(app.borrow().fingerprint().into());
    app.borrow().show_settings();

    let a = Shared(Rc::downgrade(app));
    hosts.on_save_settings(move |name, downloads| {
        a.with(|p| p.save_settings(&name, &downloads).err().unwrap_or_default()).into()
    });
    let a = Shared(Rc::downgrade(app));
    hosts.on_pick_downloads(move || a.with(|p| p.pick_downloads()));
    hosts.set_known_peers(app.borrow().known_model());
    let a = Shared(Rc::downgrade(app));
    hosts.on_filter_known(move |filter| a.with(|p| p.filter_known(&filter)));
    let a = Shared(Rc::downgrade(app));
    hosts.on_forget_key(move |fingerprint| a.with(|p| p.forget_key(&fingerprint)));
    let a = Shared(Rc::downgrade(app));
    hosts.on_set_always_accept(move |fingerprint, always| a.with(|p| p.set_always_accept(&fingerprint, always)));

    let peers = window.global::<PeerAdapter>();
    peers.set_peers(app.borrow().peer_model().into());
    peers.set_selected(-1);
    let a = Shared(Rc::downgrade(app));
    peers.on_listen(move |name, address, port, require_code, code| {
        let form =
            parse_form(&name, &address, &port, true).and_then(|addr| Ok((addr, parse_code(&code, require_code)?)));
        match form {
            Ok((addr, code)) => a.with(|p| p.listen(name.trim(), addr, code).err().unwrap_or_default()).into(),
            Err(e) => e.into(),
        }
    });
    let a = Shared(Rc::downgrade(app));
    peers.on_connect(move |name, address, port, code| {
        let form = parse_form(&name, &address, &port, false).and_then(|addr| Ok((addr, parse_code(&code, false)?)));
        match form {
            Ok((addr, code)) => a.with(|p| p.connect(name.trim(), addr, code).err().unwrap_or_default()).into(),
            Err(e) => e.into(),
        }
    });
    peers.on_suggest_port(|| free_port().map(|p| p.to_string()).unwrap_or_else(|| "50000".into()).into());
    peers.on_new_pairing_code(|| pairing::new_code().into());
    let a = Shared(Rc::downgrade(app));
    peers.on_select(move |id| a.with(|p| p.select(id)));
    let a = Shared(Rc::downgrade(app));
    peers.on_step(move |by| a.with(|p| p.step(by)));
    let a = Shared(Rc::downgrade(app));
    peers.on_rename(move |id, name| a.with(|p| p.rename(id, name.trim()).err().unwrap_or_default()).into());
    let a = Shared(Rc::downgrade(app));
    peers.on_disconnect(move |id| a.with(|p| p.disconnect(id)));
    let a = Shared(Rc::downgrade(app));
    peers.on_restart(move |id| a.with(|p| p.restart(id)));
    let a = Shared(Rc::downgrade(app));
    peers.on_remove(move |id| a.with(|p| p.remove(id)));
    let a = Shared(Rc::downgrade(app));
    peers.on_save_chat(move |id| a.with(|p| p.save_chat(id)));
    let a = Shared(Rc::downgrade(app));
    peers.on_set_verified(move |id, verified| a.with(|p| p.set_verified(id, verified)));
    let a = Shared(Rc::downgrade(app));
    peers.on_trust_new_key(move |id| a.with(|p| p.trust_new_key(id)));
    let a = Shared(Rc::downgrade(app));
    peers.on_dismiss_key_warning(move |id| a.with(|p| p.dismiss_key_warning(id)));

    let chat = window.global::<ChatAdapter>();
    let a = Shared(Rc::downgrade(app));
    chat.on_send(move |text| a.with(|p| p.send_text(&text)));
    let a = Shared(Rc::downgrade(app));
    chat.on_send_files(move || a.with(|p| p.pick_files()));
    let a = Shared(Rc::downgrade(app));
    chat.on_send_path(move |path| a.with(|p| p.send_path(path.trim())));
    let a = Shared(Rc::downgrade(app));
    chat.on_notice(move |id, text| a.with(|p| p.notice(id, &text)));
    let a = Shared(Rc::downgrade(app));
    chat.on_send_path_to(move |id, path| a.with(|p| p.send_path_to(id, path.trim())));
    let a = Shared(Rc::downgrade(app));
    chat.on_accept(move |transfer, always| a.with(|p| p.accept(transfer, always)));
    let a = Shared(Rc::downgrade(app));
    chat.on_decline(move |transfer| a.with(|p| p.decline(transfer)));
    let a = Shared(Rc::downgrade(app));
    chat.on_cancel(move |transfer| a.with(|p| p.cancel(transfer)));
    let a = Shared(Rc::downgrade(app));
    chat.on_open_folder(move |transfer| a.with(|p| p.open_folder(transfer)));
    app.borrow().refresh_chat();
}

/// Logs how long after launch the first frame was drawn (and prints it when
/// `PEERCONN_REPORT_STARTUP` is set, for `docs/measure-window.sh`).
fn report_first_frame(window: &AppWindow, launched: std::time::Instant) {
    let report = move |how: &str| {
        let ms = launched.elapsed().as_secs_f64() * 1000.0;
        log::info!("first frame {ms:.0} ms after launch ({how})");
        if std::env::var_os("PEERCONN_REPORT_STARTUP").is_some() {
            eprintln!("first-frame-ms {ms:.1}");
        }
    };
    let mut done = false;
    let notifier = window.window().set_rendering_notifier(move |state, _| {
        if !done && matches!(state, slint::RenderingState::AfterRendering) {
            done = true;
            report("rendered");
        }
    });
    if notifier.is_err() {
        // The software renderer has no notifier: the first timer tick comes
        // right after the first frame is presented.
        slint::Timer::single_shot(std::time::Duration::ZERO, move || report("first tick"));
    }
}

/// What the window's callbacks hold: the state only as long as the `Gui`
/// lives, so dropping the `Gui` really drops the engine.
struct Shared(std::rc::Weak<RefCell<Peersockets>>);

impl Shared {
    fn with<R: Default>(&self, f: impl FnOnce(&mut Peersockets) -> R) -> R {
        match self.0.upgrade() {
            Some(app) => f(&mut app.borrow_mut()),
            None => R::default(),
        }
    }
}

/// Checks the Listen / Connect form. Errors name the field and the problem.
pub fn parse_form(name: &str, address: &str, port: &str, listen: bool) -> Result<SocketAddr, String> {
    if let Err(why) = crate::net::frame::check_name(name.trim()) {
        return Err(format!("Name: {why}."));
    }
    let address = address.trim();
    let ip: IpAddr = match address {
        "" if listen => IpAddr::from([0, 0, 0, 0]),
        "" => return Err("Address: give the peer's IP address, e.g. 192.168.1.20.".into()),
        a => a.trim_matches(['[', ']']).parse().map_err(|_| {
            format!("Address: '{a}' is not an IP address (write four numbers like 192.168.1.20, or an IPv6 address).")
        })?,
    };
    if !listen && ip.is_unspecified() {
        return Err(format!("Address: {ip} cannot be connected to; give the peer's address."));
    }
    let port = port.trim();
    let port: u16 = match port.parse::<u32>() {
        Ok(p) if (1..=65535).contains(&p) => p as u16,
        Ok(0) if listen => 0,
        Ok(p) => return Err(format!("Port: {p} is out of range; ports go from 1 to 65535.")),
        Err(_) if port.is_empty() => return Err("Port: give a port number from 1 to 65535.".into()),
        Err(_) => return Err(format!("Port: '{port}' is not a number from 1 to 65535.")),
    };
    Ok(SocketAddr::new(ip, port))
}

/// Checks the pairing code field: `None` when it is empty (and not
/// required), the code as typed otherwise.
pub fn parse_code(code: &str, required: bool) -> Result<Option<String>, String> {
    let code = code.trim();
    if code.is_empty() {
        return if required {
            Err("Pairing code: type a code for your peer, or untick \"Require a pairing code\".".into())
        } else {
            Ok(None)
        };
    }
    pairing::check_code(code).map_err(|why| format!("Pairing code: {why}."))?;
    Ok(Some(code.to_owned()))
}

/// A port that is free right now, to propose in the Listen form.
fn free_port() -> Option<u16> {
    let probe = std::net::TcpListener::bind(("0.0.0.0", 0)).ok()?;
    Some(probe.local_addr().ok()?.port())
}

#[cfg(test)]
mod tests {
    use super::{parse_code, parse_form};

    #[test]
    fn form_mistakes_name_the_field() {
        assert!(parse_form("", "1.2.3.4", "5000", false).unwrap_err().starts_with("Name:"));
        assert!(parse_form("me", "1.2.3", "5000", false).unwrap_err().starts_with("Address:"));
        assert!(parse_form("me", "", "5000", false).unwrap_err().starts_with("Address:"));
        assert!(parse_form("me", "0.0.0.0", "5000", false).unwrap_err().starts_with("Address:"));
        assert!(parse_form("me", "1.2.3.4", "70000", false).unwrap_err().contains("out of range"));
        assert!(parse_form("me", "1.2.3.4", "", false).unwrap_err().starts_with("Port:"));
        assert!(parse_form("me", "1.2.3.4", "http", false).unwrap_err().starts_with("Port:"));
        assert_eq!(parse_form("me", "", "0", true).unwrap(), "0.0.0.0:0".parse().unwrap());
        assert_eq!(parse_form("me", "[::1]", "5000", false).unwrap(), "[::1]:5000".parse().unwrap());
    }

    #[test]
    fn pairing_code_mistakes_name_the_field() {
        assert_eq!(parse_code("", false), Ok(None));
        assert_eq!(parse_code("  4821-0937 ", true), Ok(Some("4821-0937".into())));
        assert!(parse_code("", true).unwrap_err().starts_with("Pairing code:"));
        assert!(parse_code("12", false).unwrap_err().starts_with("Pairing code:"));
        let generated = crate::net::pairing::new_code();
        assert_eq!(parse_code(&generated, true), Ok(Some(generated.clone())));
    }
}
