//! Where PeerConn keeps its log, and the logger itself.
//!
//! The log goes to `peerconn.log` in the platform's data directory for the
//! app (see [`data_dir`]); warnings also go to the terminal when there is
//! one. The level comes from `PEERCONN_LOG` (`error`, `warn`, `info`,
//! `debug`, `trace`, `off`; default `info`).
//!
//! Writing a file can block, and the reactor and UI threads must never
//! block, so log lines travel over a bounded channel to a `peerconn-log`
//! thread that writes them. If the disk is so slow that the channel fills,
//! lines are dropped and counted rather than stalling the caller. The file
//! is capped: past [`MAX_LOG_BYTES`] it becomes `peerconn.log.1` (replacing
//! the previous one) and a new file starts, so the log never takes more
//! than twice the cap.

use std::fs::{self, File, OpenOptions};
use std::io::{self, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender, TrySendError};
use simplelog::{
    ColorChoice, CombinedLogger, ConfigBuilder, LevelFilter, SharedLogger, TermLogger, TerminalMode, WriteLogger,
};

/// Size at which the log file is rotated.
pub const MAX_LOG_BYTES: u64 = 5 * 1024 * 1024;
/// Log lines that may wait for the writer thread.
const QUEUE_LINES: usize = 4096;
/// Environment variable that overrides the data directory.
pub const DATA_DIR_ENV: &str = "PEERCONN_DATA_DIR";
/// Environment variable with the log level.
pub const LEVEL_ENV: &str = "PEERCONN_LOG";

/// The app's data directory: `PEERCONN_DATA_DIR` if set, otherwise the
/// platform's (`~/.local/share/peerconn` on Linux,
/// `%APPDATA%\PeerConn\data` on Windows,
/// `~/Library/Application Support/PeerConn` on macOS).
pub fn data_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os(DATA_DIR_ENV).filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    directories::ProjectDirs::from("", "", "PeerConn")
        .map(|d| d.data_dir().to_path_buf())
        .unwrap_or_else(|| std::env::temp_dir().join("peerconn"))
}

/// The app's config directory (settings, this installation's key, known
/// peers): `PEERCONN_CONFIG_DIR` if set, otherwise the platform's.
pub fn config_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("PEERCONN_CONFIG_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    directories::ProjectDirs::from("", "", "PeerConn").map(|d| d.config_dir().to_path_buf()).unwrap_or_else(data_dir)
}

/// Full path of the log file.
pub fn log_path() -> PathBuf {
    data_dir().join("peerconn.log")
}

/// Keeps the log writer running; dropping it writes out what is queued and
/// stops the writer thread.
pub struct LogGuard {
    writer: Option<(Sender<Vec<u8>>, JoinHandle<()>)>,
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        if let Some((tx, thread)) = self.writer.take() {
            // An empty line is the stop signal; everything before it is written.
            let _ = tx.send(Vec::new());
            let _ = thread.join();
        }
    }
}

/// Installs the global logger. Problems with the log file are reported on
/// standard error and otherwise ignored: the app works without a log.
/// Records up to `echo` (warnings for the window, errors only for the
/// command line, which says everything else itself) also go to a terminal.
pub fn init(echo: LevelFilter) -> LogGuard {
    let level = level_from_env();
    let config = ConfigBuilder::new()
        .set_thread_level(LevelFilter::Off)
        .set_target_level(LevelFilter::Off)
        .set_time_format_rfc3339()
        .build();
    let mut loggers: Vec<Box<dyn SharedLogger>> = Vec::new();
    let mut guard = LogGuard { writer: None };
    let path = log_path();
    match start_writer(&path) {
        Ok((sink, tx, thread)) => {
            loggers.push(WriteLogger::new(level, config.clone(), sink));
            guard.writer = Some((tx, thread));
        }
        Err(e) => eprintln!("peerconn: cannot write the log {}: {e}", path.display()),
    }
    if io::stderr().is_terminal() {
        loggers.push(TermLogger::new(level.min(echo), config, TerminalMode::Stderr, ColorChoice::Auto));
    }
    // Fails only if a logger is already installed (tests); that one stays.
    let _ = CombinedLogger::init(loggers);
    guard
}

fn level_from_env() -> LevelFilter {
    match std::env::var(LEVEL_ENV) {
        Ok(v) => v.trim().parse().unwrap_or_else(|_| {
            eprintln!(
                "peerconn: {LEVEL_ENV}={v:?} is not a log level (error, warn, info, debug, trace, off); using info"
            );
            LevelFilter::Info
        }),
        Err(_) => LevelFilter::Info,
    }
}

fn start_writer(path: &Path) -> io::Result<(LineSink, Sender<Vec<u8>>, JoinHandle<()>)> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
    }
    let file = CappedFile::open(path.to_path_buf(), MAX_LOG_BYTES)?;
    let (tx, rx) = crossbeam_channel::bounded(QUEUE_LINES);
    let dropped = Arc::new(AtomicU64::new(0));
    let thread = std::thread::Builder::new().name("peerconn-log".into()).spawn({
        let dropped = dropped.clone();
        move || write_lines(file, rx, dropped)
    })?;
    Ok((LineSink { tx: tx.clone(), line: Vec::new(), dropped }, tx, thread))
}

fn write_lines(mut file: CappedFile, rx: Receiver<Vec<u8>>, dropped: Arc<AtomicU64>) {
    for line in rx {
        if line.is_empty() {
            break;
        }
        let lost = dropped.swap(0, Ordering::Relaxed);
        if lost > 0 {
            let _ = writeln!(file, "[log] {lost} lines were dropped because the disk was too slow");
        }
        if file.write_all(&line).is_err() {
            // Nowhere left to report it; keep taking lines so callers never block.
            continue;
        }
    }
    let _ = file.flush();
}

/// The `Write` that simplelog writes into: collects a line, then hands it
/// to the writer thread without ever waiting.
struct LineSink {
    tx: Sender<Vec<u8>>,
    line: Vec<u8>,
    dropped: Arc<AtomicU64>,
}

impl Write for LineSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.line.extend_from_slice(buf);
        if self.line.ends_with(b"\n") {
            let line = std::mem::take(&mut self.line);
            match self.tx.try_send(line) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                    self.dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// An append-only file that rotates to `<name>.1` when it reaches its cap.
pub struct CappedFile {
    path: PathBuf,
    /// `None` only while rotating, or if reopening after a rotation failed.
    file: Option<File>,
    len: u64,
    cap: u64,
}

impl CappedFile {
    pub fn open(path: PathBuf, cap: u64) -> io::Result<CappedFile> {
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        let len = file.metadata()?.len();
        Ok(CappedFile { path, file: Some(file), len, cap })
    }

    fn rotate(&mut self) -> io::Result<()> {
        let mut old = self.path.clone().into_os_string();
        old.push(".1");
        // Closed first: renaming an open file fails on some systems.
        self.file = None;
        let _ = fs::remove_file(&old);
        let renamed = fs::rename(&self.path, &old);
        self.file = Some(OpenOptions::new().create(true).append(true).open(&self.path)?);
        self.len = self.file.as_ref().map_or(Ok(0), |f| f.metadata().map(|m| m.len()))?;
        renamed
    }
}

impl Write for CappedFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.len > 0 && self.len + buf.len() as u64 > self.cap {
            self.rotate()?;
        }
        let file = self.file.as_mut().ok_or_else(|| io::Error::other("the log file is closed"))?;
        let n = file.write(buf)?;
        self.len += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.as_mut().map_or(Ok(()), |f| f.flush())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capped_file_rotates_and_stays_under_twice_the_cap() {
        let dir = std::env::temp_dir().join(format!("peerconn-logtest-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.log");
        let mut f = CappedFile::open(path.clone(), 1000).unwrap();
        for _ in 0..100 {
            f.write_all(&[b'x'; 99]).unwrap();
            f.write_all(b"\n").unwrap();
        }
        let now = fs::metadata(&path).unwrap().len();
        let old = fs::metadata(dir.join("t.log.1")).unwrap().len();
        assert!(now <= 1000 && old <= 1000, "{now} {old}");
        drop(f);
        fs::remove_dir_all(&dir).unwrap();
    }
}
