//! The desktop window: Slint views in `ui/`, driven by the same engine as
//! the command line.
//!
//! The layers, each in its own file:
//! - `state.rs`: what the window shows, as plain Rust (no Slint), applying
//!   engine events and the person's actions; unit-tested without a window.
//! - `copy.rs`: the words the person reads.
//! - `adapters/`: one small adapter per Slint global, mapping the state to
//!   Slint structs and enums and connecting the global's callbacks.
//! - `controller.rs`: turns callbacks into `Engine` calls and feeds the
//!   state; owns the engine.
//! - `shell.rs`: native pickers, opening folders, saving chats, on worker
//!   threads that report back on a channel.
//! - `ui`: the code Slint generates from `ui/app.slint`, fenced in below.
//!
//! Threads: UI callbacks only send commands to the engine (non-blocking); a
//! `slint::Timer` drains the engine's events and the workers' reports every
//! 50 ms. The UI thread never waits on the network or the disk (see
//! docs/THREADING.md).

mod adapters;
mod chatlog;
mod controller;
mod copy;
mod form;
mod notify;
pub mod settings;
mod shell;
mod state;
pub mod store;

use std::cell::RefCell;
use std::process::ExitCode;
use std::rc::Rc;
use std::time::Duration;

use slint::ComponentHandle;

use crate::hostinfo::HostInfo;
use crate::net::{Engine, EngineConfig};

use controller::{Controller, Handle};
pub use settings::Settings;
/// What Rust (and the UI tests) see of the UI: the window, its globals and
/// the types they speak.
pub use ui::{
    AppWindow, ChatAdapter, ChatItem, ChatItemKind, Dialog, FileState, HostAdapter, KeyTrust, KnownPeerItem,
    PeerAdapter, PeerItem, PeerStatus,
};

/// The code Slint generates from ui/app.slint, in a module of its own.
mod ui {
    slint::include_modules!();
}

/// How often engine events are drained.
const DRAIN_EVERY: Duration = Duration::from_millis(50);

/// The window with its engine and the timer that feeds it. Dropping it
/// stops the timer and the engine (peers are told, partial files removed).
pub struct Gui {
    pub window: AppWindow,
    /// The only strong reference to the controller (and so to the engine).
    _controller: Rc<RefCell<Controller>>,
    timer: slint::Timer,
}

impl Gui {
    /// Builds the window on the current thread (which must run Slint's
    /// event loop) and starts its engine.
    pub fn new(config: EngineConfig, settings: Settings, host: &HostInfo) -> Result<Gui, String> {
        Gui::with_store(config, settings, host, None)
    }

    /// With `store` (a folder), peersockets and their conversations are
    /// kept there and the ones kept last time come back (see `store.rs`).
    pub fn with_store(
        config: EngineConfig,
        settings: Settings,
        host: &HostInfo,
        store: Option<std::path::PathBuf>,
    ) -> Result<Gui, String> {
        let store = store.map(|dir| store::Store::new(dir, config.identity.derive_key(store::SEAL_CONTEXT)));
        let engine = Engine::with_config(config).map_err(|e| format!("cannot start the network engine: {e}"))?;
        let window = AppWindow::new().map_err(|e| format!("cannot open the window: {e}"))?;
        match std::env::var("PEERCONN_THEME").as_deref() {
            Ok("dark") => window.invoke_use_dark(true),
            Ok("light") => window.invoke_use_dark(false),
            _ => {} // follow the system
        }
        let controller = Controller::start(engine, settings, &window, host, store);
        watch_window(&window, Handle::new(&controller));
        // Closing the window quits, unless PeerConn is kept in the tray.
        let closing = Handle::new(&controller);
        window.window().on_close_requested(move || {
            if !closing.with(|c| c.close_to_tray()) {
                let _ = slint::quit_event_loop();
            }
            slint::CloseRequestResponse::HideWindow
        });
        let timer = slint::Timer::default();
        let drain = Handle::new(&controller);
        timer.start(slint::TimerMode::Repeated, DRAIN_EVERY, move || drain.with(|c| c.drain()));
        Ok(Gui { window, _controller: controller, timer })
    }

    /// Files or folders dropped on the window, as the window's event hook
    /// hands them over: offered to the peer whose conversation is shown.
    pub fn drop_files(&self, paths: Vec<std::path::PathBuf>) {
        self._controller.borrow_mut().dropped(paths);
    }

    /// The icon in the system tray: unread activity, Show and Quit. None
    /// where there is no tray to put it in.
    pub fn add_tray(&self) -> Option<ui::Tray> {
        let tray = match ui::Tray::new() {
            Ok(tray) => tray,
            Err(e) => {
                log::warn!("no tray icon: {e}");
                return None;
            }
        };
        let window = self.window.as_weak();
        tray.on_show_window(move || {
            if let Some(window) = window.upgrade() {
                if let Err(e) = window.show() {
                    log::error!("cannot show the window: {e}");
                }
                bring_to_front(&window);
            }
        });
        tray.on_quit(|| {
            let _ = slint::quit_event_loop();
        });
        if let Err(e) = tray.show() {
            log::warn!("no tray icon: {e}");
            return None;
        }
        self._controller.borrow_mut().set_tray(tray.as_weak());
        Some(tray)
    }

    /// Desktop notifications while the window is behind others (`run`
    /// turns them on; tests leave the desktop alone).
    pub fn notify_desktop(&self) {
        self._controller.borrow_mut().start_notifications();
    }

    /// Starts looking for listeners on the local network, for Connect's
    /// Nearby list (`run` does; tests leave the host's network alone).
    pub fn look_nearby(&self) {
        self._controller.borrow_mut().start_nearby();
    }
}

impl Drop for Gui {
    fn drop(&mut self) {
        self.timer.stop();
        let _ = self.window.hide();
        // Callbacks and the timer hold only weak references: the engine goes
        // with the controller, saying bye to every peer and removing partial
        // files.
    }
}

/// What Slint does not deliver by itself, taken from winit's events: the
/// window coming to the front or going behind others (for
/// notifications), and files dragged from a file manager and dropped on
/// it. winit reports drops on X11, Windows and macOS; on Wayland it
/// reports none (winit 0.30 has no drag and drop there), so there the
/// Send files… button is the way. Other backends (tests) have no hook.
fn watch_window(window: &AppWindow, controller: Handle) {
    use slint::winit_030::winit::event::WindowEvent;
    use slint::winit_030::{EventResult, WinitWindowAccessor};
    window.window().on_winit_window_event(move |_, event| {
        match event {
            WindowEvent::Focused(focused) => controller.with(|c| c.focused(*focused)),
            WindowEvent::HoveredFile(_) => controller.with(|c| c.hovering(true)),
            WindowEvent::HoveredFileCancelled => controller.with(|c| c.hovering(false)),
            WindowEvent::DroppedFile(path) => controller.with(|c| c.dropped(vec![path.clone()])),
            _ => {}
        }
        EventResult::Propagate
    });
}

/// Asks the desktop to bring the window forward (after the tray showed it).
fn bring_to_front(window: &AppWindow) {
    use slint::winit_030::WinitWindowAccessor;
    window.window().with_winit_window(|w| {
        w.set_minimized(false);
        w.focus_window();
    });
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
/// With `hidden`, it starts in the system tray, without the window.
pub fn run(launched: std::time::Instant, hidden: bool) -> ExitCode {
    let host = HostInfo::detect();
    let settings = Settings::load();
    let config = match EngineConfig::installed() {
        Ok(config) => EngineConfig { downloads: settings.downloads.clone(), announce: settings.announce, ..config },
        Err(e) => {
            let e = format!("cannot read this installation's key: {e}");
            eprintln!("peerconn: {e}");
            log::error!("{e}");
            return ExitCode::FAILURE;
        }
    };
    choose_renderer();
    let kept = crate::logging::data_dir().join("peersockets");
    let gui = match Gui::with_store(config, settings, &host, Some(kept)) {
        Ok(gui) => gui,
        Err(e) => {
            eprintln!("peerconn: {e}");
            log::error!("{e}");
            return ExitCode::FAILURE;
        }
    };
    gui.look_nearby();
    gui.notify_desktop();
    let tray = gui.add_tray();
    report_first_frame(&gui.window, launched);
    let result = match (hidden, &tray) {
        (true, Some(_)) => {
            log::info!("started in the tray (host {}, address {})", host.host_name, host.primary());
            Ok(())
        }
        (true, None) => {
            log::warn!("no tray icon, so the window opens after all");
            gui.window.show()
        }
        (false, _) => {
            log::info!("window opened (host {}, address {})", host.host_name, host.primary());
            gui.window.show()
        }
    };
    // The loop runs until Quit (the tray's menu, or closing the window
    // when PeerConn is not kept in the tray): a hidden window keeps it.
    let result = result.and_then(|()| slint::run_event_loop_until_quit());
    let _ = gui.window.hide();
    drop(tray);
    drop(gui);
    if let Err(e) = result {
        eprintln!("peerconn: the window failed: {e}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
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
