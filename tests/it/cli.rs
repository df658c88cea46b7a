//! The command line end to end: `peerconn listen` and `peerconn connect` as
//! child processes, talking over loopback.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use serde_json::Value;

const PATIENCE: Duration = Duration::from_secs(15);

/// A running `peerconn` with its output arriving line by line.
struct Peerconn {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    /// This process's key fingerprint, from its first line of output.
    key: String,
    _data: TempDir,
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn temp_dir() -> TempDir {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir =
        std::env::temp_dir().join(format!("peerconn-cli-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed)));
    std::fs::create_dir_all(&dir).unwrap();
    TempDir(dir)
}

/// A test that ends (or fails) with its programs still running stops them:
/// no `peerconn listen` outlives the test run.
impl Drop for Peerconn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Peerconn {
    /// Runs `command` with its own data and config folders, its output
    /// read line by line (a pty's carriage returns dropped).
    fn spawn(mut command: Command, what: &str) -> Peerconn {
        let data = temp_dir();
        // A test that restarts a program gives it the same folders itself.
        if !command.get_envs().any(|(k, _)| k == "PEERCONN_CONFIG_DIR") {
            command.env("PEERCONN_DATA_DIR", &data.0).env("PEERCONN_CONFIG_DIR", &data.0);
        }
        let mut child =
            command.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect(what);
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = crossbeam_channel::unbounded();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line.trim_end_matches('\r').to_owned()).is_err() {
                    break;
                }
            }
        });
        let stdin = child.stdin.take();
        Peerconn { child, stdin, lines, key: String::new(), _data: data }
    }

    fn start(args: &[&str]) -> Peerconn {
        let mut command = Command::new(env!("CARGO_BIN_EXE_peerconn"));
        command.args(args);
        let mut peerconn = Peerconn::spawn(command, "peerconn starts");
        // Every session starts by showing its own key.
        let first = peerconn.line();
        peerconn.key = match serde_json::from_str::<Value>(&first) {
            Ok(v) if v["event"] == "key" => v["fingerprint"].as_str().unwrap_or_default().to_owned(),
            _ => first.strip_prefix("this installation's key: ").unwrap_or_else(|| panic!("{first}")).to_owned(),
        };
        assert_eq!(peerconn.key.len(), 24, "{first}");
        peerconn
    }

    fn line(&self) -> String {
        self.lines.recv_timeout(PATIENCE).expect("a line of output")
    }

    fn event(&self) -> Value {
        let line = self.line();
        let value: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(value["event"].is_string(), "no event field: {line}");
        value
    }

    fn event_named(&self, name: &str) -> Value {
        let value = self.event();
        assert_eq!(value["event"], name, "{value}");
        value
    }

    /// A listener's first `listening` event (and the `link` that follows
    /// it): the address it listens on.
    fn listening(&self) -> String {
        let addr = self.event_named("listening")["addr"].as_str().unwrap().to_owned();
        let link = self.event_named("link");
        let url = link["url"].as_str().unwrap();
        assert!(url.starts_with(&format!("peerconn://{addr}")) || addr.starts_with("0.0.0.0:"), "{url} for {addr}");
        addr
    }

    fn say(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
    }

    fn end_input(&mut self) {
        self.stdin = None;
    }

    /// Waits for the exit; returns the status and standard error.
    fn finish(mut self) -> (ExitStatus, String) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                let mut err = String::new();
                use std::io::Read;
                self.child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
                return (status, err);
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("peerconn did not exit");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn run(args: &[&str]) -> (ExitStatus, String, String) {
    let data = temp_dir();
    let out = Command::new(env!("CARGO_BIN_EXE_peerconn"))
        .args(args)
        .env("PEERCONN_DATA_DIR", &data.0)
        .env("PEERCONN_CONFIG_DIR", &data.0)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (out.status, String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

fn listen_json(extra: &[&str]) -> (Peerconn, String) {
    let mut args = vec!["listen", "--bind", "127.0.0.1", "--name", "alice", "--json"];
    args.extend_from_slice(extra);
    let listener = Peerconn::start(&args);
    let addr = listener.listening();
    assert!(addr.starts_with("127.0.0.1:") && !addr.ends_with(":0"), "{addr}");
    (listener, addr)
}

#[test]
fn listen_and_connect_exchange_lines_with_json_events() {
    let (mut alice, addr) = listen_json(&["--once"]);
    let mut bob = Peerconn::start(&["connect", &addr, "--name", "bob", "--json"]);
    let bob_saw = bob.event_named("connected");
    assert_eq!(bob_saw["peer_name"], "alice");
    assert_eq!(bob_saw["peer_addr"], addr.as_str());
    let alice_saw = alice.event_named("connected");
    assert_eq!(alice_saw["peer_name"], "bob");
    // Each saw the other's real key, and both show the same safety code.
    assert_eq!(bob_saw["fingerprint"], alice.key.as_str());
    assert_eq!(alice_saw["fingerprint"], bob.key.as_str());
    assert_eq!(bob_saw["safety_code"], alice_saw["safety_code"]);
    assert_eq!(bob_saw["trust"], "new, unverified");

    bob.say("hello alice");
    let message = alice.event_named("message");
    assert_eq!(message["from"], "bob");
    assert_eq!(message["text"], "hello alice");
    alice.say("hi bob, ünïcode ✓");
    let message = bob.event_named("message");
    assert_eq!(message["from"], "alice");
    assert_eq!(message["text"], "hi bob, ünïcode ✓");

    // End of input: bob delivers what is queued, closes, and exits 0;
    // alice (--once) sees a clean end and exits 0 too.
    bob.say("one more");
    bob.say("and the last");
    bob.end_input();
    assert_eq!(alice.event_named("message")["text"], "one more");
    assert_eq!(alice.event_named("message")["text"], "and the last");
    let (alice_lost, bob_lost) = (alice.event_named("lost"), bob.event_named("lost"));
    assert_eq!(
        (&alice_lost["kind"], &alice_lost["reason"]),
        (&"peer_closed".into(), &"the peer closed the connection".into())
    );
    assert_eq!((&bob_lost["kind"], &bob_lost["reason"]), (&"closed".into(), &"you closed the connection".into()));
    let (status, err) = bob.finish();
    assert!(status.success(), "bob: {status} {err}");
    let (status, err) = alice.finish();
    assert!(status.success(), "alice: {status} {err}");
}

#[test]
fn listen_keeps_typed_lines_until_a_peer_connects() {
    let (mut alice, addr) = listen_json(&["--once"]);
    alice.say("early bird");
    alice.say("second early line");
    alice.end_input();
    let bob = Peerconn::start(&["connect", &addr, "--name", "bob", "--json"]);
    assert_eq!(bob.event_named("connected")["peer_name"], "alice");
    assert_eq!(bob.event_named("message")["text"], "early bird");
    assert_eq!(bob.event_named("message")["text"], "second early line");
    assert_eq!(bob.event_named("lost")["reason"], "the peer closed the connection");
    assert!(bob.finish().0.success());
    assert!(alice.finish().0.success());
}

#[test]
fn readable_output_without_json() {
    let mut alice = Peerconn::start(&["listen", "--bind", "127.0.0.1", "--name", "alice", "--once"]);
    let listening = alice.line();
    let addr = listening.strip_prefix("listening on ").expect(&listening).to_owned();
    let link = alice.line();
    assert!(link.starts_with(&format!("link: peerconn://{addr}#")), "{link}");
    assert!(alice.line().contains("lets in only this key"));
    let mut bob = Peerconn::start(&["connect", &addr, "--name", "bob"]);
    assert_eq!(bob.line(), format!("connecting to {addr}"));
    assert_eq!(bob.line(), format!("connected to alice at {addr}, encrypted"));
    assert_eq!(bob.line(), format!("  peer key {} (new, unverified)", alice.key));
    let code = bob.line();
    assert!(code.starts_with("  safety code ") && code.ends_with("unless someone is in between)"), "{code}");
    assert!(alice.line().starts_with("connected to bob at 127.0.0.1:"));
    assert_eq!(alice.line(), format!("  peer key {} (new, unverified)", bob.key));
    assert_eq!(alice.line(), code, "both sides show the same safety code");
    bob.say("plain text, with a \u{1b}[31m terminal escape");
    assert_eq!(alice.line(), "bob: plain text, with a \\u{1b}[31m terminal escape");
    bob.end_input();
    assert_eq!(alice.line(), "lost: the peer closed the connection");
    assert!(bob.finish().0.success());
    alice.end_input();
    assert!(alice.finish().0.success());
}

#[test]
fn connect_to_a_closed_port_exits_1_with_the_reason() {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let (status, stdout, stderr) = run(&["connect", &format!("127.0.0.1:{port}"), "--json"]);
    assert_eq!(status.code(), Some(1), "{stderr}");
    let lost: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(lost["event"], "lost");
    assert_eq!(lost["kind"], "unreachable");
    assert!(lost["reason"].as_str().unwrap().contains("refused"));
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("connection refused by 127.0.0.1"), "{stderr}");
}

#[test]
fn usage_errors_exit_2_with_a_message_naming_the_problem() {
    let cases: &[(&[&str], &str)] = &[
        (&["connect", "localhost"], "has no port"),
        (&["connect", "127.0.0.1:99999"], "out of range"),
        (&["connect", "127.0.0.1:0"], "port 0"),
        (&["connect", "127.0.0.1:http"], "not a port number"),
        (&["listen", "--port", "70000"], "70000"),
        (&["listen", "--bind", "not-an-ip"], "not-an-ip"),
        (&["listen", "--name", ""], "invalid --name: the name is empty"),
        (&["listen", "--code", "12"], "invalid --code"),
        (&["connect", "127.0.0.1:5000", "--code", "a-b"], "invalid --code: a pairing code needs at least 4"),
        (&["connect", "127.0.0.1:5000", "--name", &"x".repeat(100)], "limit is 64"),
        (&["listen", "--downloads", "/no/such/folder/here"], "does not exist"),
        (&["frobnicate"], "frobnicate"),
    ];
    for (args, needle) in cases {
        let (status, _, stderr) = run(args);
        assert_eq!(status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
}

#[test]
fn listening_on_a_port_in_use_exits_1() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let (status, _, stderr) = run(&["listen", "--bind", "127.0.0.1", "--port", &port]);
    assert_eq!(status.code(), Some(1));
    assert!(stderr.contains(&format!("port {port} is already in use")), "{stderr}");
}

#[test]
fn help_shows_the_log_path() {
    let (status, stdout, _) = run(&["--help"]);
    assert!(status.success());
    assert!(stdout.contains("peerconn.log"), "{stdout}");
    assert!(stdout.contains("listen") && stdout.contains("connect"));
}

#[cfg(unix)]
#[test]
fn interrupt_closes_the_connection_gracefully() {
    let (alice, addr) = listen_json(&[]);
    let bob = Peerconn::start(&["connect", &addr, "--name", "bob", "--json"]);
    bob.event_named("connected");
    alice.event_named("connected");
    let pid = alice.child.id().to_string();
    assert!(Command::new("kill").args(["-INT", &pid]).status().unwrap().success());
    assert_eq!(bob.event_named("lost")["reason"], "the peer closed the connection");
    assert!(alice.finish().0.success());
    assert!(bob.finish().0.success());
}

#[test]
fn listen_without_once_serves_one_peer_after_another() {
    let (alice, addr) = listen_json(&[]);
    for name in ["bob", "carol"] {
        let mut peer = Peerconn::start(&["connect", &addr, "--name", name, "--json"]);
        peer.event_named("connected");
        assert_eq!(alice.event_named("connected")["peer_name"], name);
        peer.say(&format!("hi from {name}"));
        assert_eq!(alice.event_named("message")["text"], format!("hi from {name}"));
        peer.end_input();
        alice.event_named("lost");
        alice.event_named("listening");
        assert!(peer.finish().0.success());
    }
    let mut alice = alice;
    let _ = alice.child.kill();
}

/// CPU time (user + system) the process has used so far, from /proc.
#[cfg(target_os = "linux")]
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // The fields after the command name, which is in parentheses.
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / 100.0
}

/// A listener whose standard input ended (started from a script, say) goes
/// on listening, idle: it used to spin on the closed input at full CPU.
#[test]
#[cfg(target_os = "linux")]
fn a_listener_whose_input_ended_stays_idle_and_serves_peers() {
    let (mut alice, addr) = listen_json(&[]);
    alice.end_input();
    std::thread::sleep(Duration::from_millis(300));
    let pid = alice.child.id();
    let before = cpu_seconds(pid);
    std::thread::sleep(Duration::from_secs(2));
    let used = cpu_seconds(pid) - before;
    assert!(used < 0.5, "an idle listener used {used:.2} s of CPU in 2 s");
    let mut bob = Peerconn::start(&["connect", &addr, "--name", "bob", "--json"]);
    bob.event_named("connected");
    assert_eq!(alice.event_named("connected")["peer_name"], "bob");
    bob.say("still there?");
    assert_eq!(alice.event_named("message")["text"], "still there?");
    bob.end_input();
    assert!(bob.finish().0.success());
    let _ = alice.child.kill();
}

/// A listener on a terminal (a pty from `script`) asks y/N for each file:
/// "y" takes the file, anything else declines it, and the sender hears so.
#[test]
#[cfg(unix)]
fn on_a_terminal_each_offer_is_asked_and_answered_y_or_n() {
    let down = downloads_dir();
    let listen = format!(
        "{} listen --bind 127.0.0.1 --name alice --downloads {}",
        env!("CARGO_BIN_EXE_peerconn"),
        down.0.display()
    );
    let mut script = Command::new("script");
    script.args(["-qfec", &listen, "/dev/null"]);
    let mut alice = Peerconn::spawn(script, "script (util-linux) runs");
    let wait_for = |alice: &Peerconn, start: &str| loop {
        let line = alice.line();
        assert!(!line.contains("(0 bytes/s"), "a speed of zero shown: {line}");
        assert!(!line.contains("[WARN]"), "the log's copy of a warning reached the terminal: {line}");
        if line.starts_with(start) {
            break line;
        }
    };
    let listening = wait_for(&alice, "listening on ");
    let addr = listening.trim_start_matches("listening on ").to_owned();

    let outbox = temp_dir();
    let wanted = outbox.0.join("wanted.bin");
    let unwanted = outbox.0.join("unwanted.bin");
    std::fs::write(&wanted, crate::support::noise(200_000, 4)).unwrap();
    std::fs::write(&unwanted, b"no thanks").unwrap();

    let bob = Peerconn::start(&["send", &addr, wanted.to_str().unwrap(), "--name", "bob"]);
    let asked = wait_for(&alice, "accept ");
    assert!(asked.contains("wanted.bin") && asked.ends_with("[y/N]"), "{asked}");
    alice.say("y");
    let (status, err) = bob.finish();
    assert!(status.success(), "{err}");
    assert_eq!(std::fs::read(down.0.join("wanted.bin")).unwrap(), std::fs::read(&wanted).unwrap());

    let carol = Peerconn::start(&["send", &addr, unwanted.to_str().unwrap(), "--name", "carol"]);
    let asked = wait_for(&alice, "accept ");
    assert!(asked.contains("unwanted.bin"), "{asked}");
    alice.say("n");
    let (status, err) = carol.finish();
    assert!(!status.success(), "a declined file must fail the send");
    assert!(err.contains("declined"), "{err}");
    assert!(!down.0.join("unwanted.bin").exists());

    // Another installation calling itself bob: the terminal gets the
    // command line's own warning, once, not the log's copy of it as well.
    let impostor = Peerconn::start(&["send", &addr, wanted.to_str().unwrap(), "--name", "bob"]);
    let warning = wait_for(&alice, "WARNING: ");
    assert!(warning.contains("different key"), "{warning}");
    assert!(!impostor.finish().0.success());
    alice.end_input();
    while let Ok(line) = alice.lines.recv_timeout(Duration::from_secs(2)) {
        assert!(!line.contains("[WARN]") && !line.contains("WARNING: "), "said twice: {line}");
    }
    let _ = alice.child.kill();
}

fn downloads_dir() -> TempDir {
    temp_dir()
}

#[test]
fn send_delivers_files_verified_and_exits_0() {
    let down = downloads_dir();
    let down_path = down.0.display().to_string();
    let (alice, addr) = listen_json(&["--once", "--accept-files", "--downloads", &down_path]);
    let outbox = temp_dir();
    let one = outbox.0.join("one.bin");
    let two = outbox.0.join("two words.txt");
    std::fs::write(&one, crate::support::noise(3 * 1024 * 1024 + 17, 9)).unwrap();
    std::fs::write(&two, b"hello file").unwrap();
    let bob = Peerconn::start(&["send", &addr, one.to_str().unwrap(), two.to_str().unwrap(), "--json"]);
    let mut sent = Vec::new();
    loop {
        let event = bob.event();
        match event["event"].as_str().unwrap() {
            "file_sent" => sent.push(event["name"].as_str().unwrap().to_owned()),
            "lost" => break,
            "connected" | "file_progress" => {}
            other => panic!("unexpected {other}: {event}"),
        }
    }
    sent.sort();
    assert_eq!(sent, vec!["one.bin", "two words.txt"]);
    let (status, err) = bob.finish();
    assert!(status.success(), "{err}");
    let mut received = Vec::new();
    loop {
        let event = alice.event();
        match event["event"].as_str().unwrap() {
            "file_received" => {
                let path = PathBuf::from(event["path"].as_str().unwrap());
                let bytes = std::fs::read(&path).unwrap();
                assert_eq!(event["blake3"], blake3::hash(&bytes).to_hex().as_str());
                assert_eq!(event["size"], bytes.len() as u64);
                received.push(path);
            }
            "lost" => break,
            _ => {}
        }
    }
    assert_eq!(received.len(), 2);
    assert_eq!(std::fs::read(down.0.join("one.bin")).unwrap(), std::fs::read(&one).unwrap());
    assert_eq!(std::fs::read(down.0.join("two words.txt")).unwrap(), b"hello file");
    assert!(alice.finish().0.success());
}

#[test]
fn send_to_a_peer_that_declines_exits_1_with_the_reason() {
    // No --accept-files and no terminal: every offer is declined.
    let down = downloads_dir();
    let down_path = down.0.display().to_string();
    let (_alice, addr) = listen_json(&["--once", "--downloads", &down_path]);
    let outbox = temp_dir();
    let file = outbox.0.join("nope.txt");
    std::fs::write(&file, b"unwanted").unwrap();
    let (status, stdout, stderr) = run(&["send", &addr, file.to_str().unwrap()]);
    assert_eq!(status.code(), Some(1), "{stdout}{stderr}");
    assert!(stderr.contains("declined"), "{stderr}");
    assert!(stdout.contains("0 of 1 files sent"), "{stdout}");
    assert!(std::fs::read_dir(&down.0).unwrap().next().is_none());
}

#[test]
fn a_declined_file_is_a_file_failed_event_with_its_kind_in_json() {
    let down = downloads_dir();
    let down_path = down.0.display().to_string();
    let (_alice, addr) = listen_json(&["--once", "--downloads", &down_path]);
    let outbox = temp_dir();
    let file = outbox.0.join("nope.txt");
    std::fs::write(&file, b"unwanted").unwrap();
    let (status, stdout, stderr) = run(&["send", &addr, file.to_str().unwrap(), "--json"]);
    assert_eq!(status.code(), Some(1), "{stdout}{stderr}");
    let failed = stdout
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .find(|event| event["event"] == "file_failed")
        .unwrap_or_else(|| panic!("no file_failed in {stdout}"));
    assert_eq!(failed["name"], "nope.txt");
    assert_eq!(failed["kind"], "declined_by_peer");
    assert!(failed["reason"].as_str().unwrap().starts_with("the peer declined the file"), "{failed}");
}

#[test]
fn slash_send_in_a_chat_sends_a_file_and_end_of_input_waits_for_it() {
    let down = downloads_dir();
    let down_path = down.0.display().to_string();
    let (alice, addr) = listen_json(&["--once", "--accept-files", "--downloads", &down_path]);
    let outbox = temp_dir();
    let file = outbox.0.join("attached.dat");
    std::fs::write(&file, crate::support::noise(5 * 1024 * 1024, 11)).unwrap();
    let mut bob = Peerconn::start(&["connect", &addr, "--json"]);
    bob.event_named("connected");
    bob.say("here it comes");
    bob.say(&format!("/send {}", file.display()));
    bob.end_input();
    assert_eq!(alice.event_named("connected")["event"], "connected");
    assert_eq!(alice.event_named("message")["text"], "here it comes");
    let offered = alice.event_named("file_offered");
    assert_eq!(offered["name"], "attached.dat");
    loop {
        let event = alice.event();
        if event["event"] == "file_received" {
            break;
        }
        assert_eq!(event["event"], "file_progress", "{event}");
    }
    assert_eq!(std::fs::read(down.0.join("attached.dat")).unwrap(), std::fs::read(&file).unwrap());
    assert_eq!(alice.event_named("lost")["reason"], "the peer closed the connection");
    assert!(bob.finish().0.success());
    assert!(alice.finish().0.success());
}

#[test]
fn send_with_a_missing_file_is_a_usage_error() {
    let (status, _, stderr) = run(&["send", "127.0.0.1:9", "/no/such/file.zip"]);
    assert_eq!(status.code(), Some(2));
    assert!(stderr.contains("is not a file"), "{stderr}");
}

/// Regression: with edge-triggered readiness, a listener whose `accept`
/// failed for want of descriptors never looked at its backlog again until
/// one more connection arrived (a real peer waited 12 s).
#[cfg(target_os = "linux")]
#[test]
fn a_listener_out_of_descriptors_takes_a_waiting_peer_as_soon_as_one_is_free() {
    use crate::support::Node;
    use peerconn::net::EngineConfig;
    if Command::new("prlimit").arg("--version").output().is_err() {
        eprintln!("skipped: prlimit (util-linux) is not installed");
        return;
    }
    let mut listener = Peerconn::start(&["listen", "--json", "--name", "victim", "--bind", "127.0.0.1"]);
    let addr: std::net::SocketAddr = listener.listening().as_str().parse().expect("an address");
    // Leave it fewer free descriptors than one source may hold in its
    // hello (eight), so the silent ones below exhaust them rather than displace
    // each other. Counted from the running process: what it inherits and
    // opens differs between machines.
    let pid = listener.child.id();
    let open = std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count();
    let limit = open + 4;
    let limited = Command::new("prlimit")
        .arg(format!("--pid={pid}"))
        .arg(format!("--nofile={limit}:{limit}"))
        .status()
        .expect("prlimit runs");
    assert!(limited.success(), "prlimit could not limit the listener");
    // Silent connections take every descriptor it has; more wait in the
    // backlog.
    let hogs: Vec<std::net::TcpStream> = (0..24).map(|_| std::net::TcpStream::connect(addr).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(300));
    let mut client = Node::with_config(EngineConfig::default());
    let c = client.engine.connect("real", addr).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    if let Ok(line) = listener.lines.try_recv() {
        panic!("the listener went on although descriptors were exhausted: {line}");
    }
    // The silent ones leave; their descriptors are freed.
    drop(hogs);
    let freed = Instant::now();
    client.connected(c);
    assert!(freed.elapsed() < Duration::from_secs(3), "the real peer waited {:?}", freed.elapsed());
    assert_eq!(listener.event_named("connected")["peer_name"], "real");
    let _ = listener.child.kill();
    let _ = listener.child.wait();
}

/// Regression: a refused connection lingers to deliver its bye while the
/// peer keeps its side open; hundreds of them a second held a descriptor
/// each without a cap.
#[cfg(target_os = "linux")]
#[test]
fn refused_connections_that_stay_open_hold_a_bounded_number_of_descriptors() {
    use crate::support::RawPeer;
    use peerconn::net::frame::{self, ByeCode, Frame};
    let mut listener = Peerconn::start(&["listen", "--json", "--name", "busy", "--bind", "127.0.0.1"]);
    let addr: std::net::SocketAddr = listener.listening().as_str().parse().expect("an address");
    let (_first, _) = RawPeer::hello(addr, "first");
    listener.event_named("connected");
    // Each of these is refused as busy and then just stays open.
    let mut refused = Vec::new();
    for i in 0..400 {
        let mut peer = RawPeer::connect(addr);
        peer.send(&Frame::Hello { version: frame::VERSION, pairing: false, name: format!("extra {i}") });
        refused.push(peer);
    }
    let last = refused.last_mut().unwrap();
    assert!(matches!(last.recv(), Some(Frame::Bye { code: ByeCode::Busy, .. })), "refused as busy");
    let fds = std::fs::read_dir(format!("/proc/{}/fd", listener.child.id())).unwrap().count();
    // The cap on closing connections (128), those still in their hello
    // (16), and the process's own files.
    assert!(fds <= 128 + 16 + 16, "the listener holds {fds} descriptors for 400 refused peers");
    let _ = listener.child.kill();
    let _ = listener.child.wait();
}

#[cfg(target_os = "linux")]
fn resident_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap_or("VmRSS: 0 kB");
    line.split_whitespace().nth(1).and_then(|n| n.parse().ok()).unwrap_or(0)
}

/// Kills a child process when the test ends, however it ends.
#[cfg(target_os = "linux")]
struct Reaped(Child);

#[cfg(target_os = "linux")]
impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Regression: when nothing read `peerconn listen --json`'s output, a peer
/// chatting within the rate limit grew the process without bound (the
/// event channel was unbounded). Now the engine stops reading the peer
/// until its events are taken, and every message still arrives, in order.
#[cfg(target_os = "linux")]
#[test]
fn a_listener_whose_output_nobody_reads_stays_small_and_loses_no_message() {
    use crate::support::Node;
    use peerconn::net::{EngineConfig, Event, PeerState};
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let data = temp_dir();
    let mut child = Reaped(
        Command::new(env!("CARGO_BIN_EXE_peerconn"))
            .args(["listen", "--json", "--name", "stalled", "--bind", "127.0.0.1", "--port", &port.to_string()])
            .env("PEERCONN_DATA_DIR", &data.0)
            .env("PEERCONN_CONFIG_DIR", &data.0)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let pid = child.0.id();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut client = Node::with_config(EngineConfig::default());
    let started = Instant::now();
    let c = loop {
        let c = client.engine.connect("chatty", addr).unwrap();
        let up = client.wait("connected or lost", |e| match e {
            Event::State { id, state: PeerState::Connected { .. } } if *id == c => Some(true),
            Event::State { id, state: PeerState::Lost { .. } } if *id == c => Some(false),
            _ => None,
        });
        match up {
            true => break c,
            false if started.elapsed() < PATIENCE => std::thread::sleep(Duration::from_millis(100)),
            false => panic!("the listener never came up"),
        }
    };
    std::thread::sleep(Duration::from_millis(300));
    let before = resident_kib(pid);
    // 16 KB messages at 450 a second (the limit is 500) for 8 s: 57 MB.
    let text = "x".repeat(16_000);
    let (mut attempted, mut refused) = (0u32, 0u32);
    let count_refusals = |client: &mut Node| {
        // Messages the client could not queue are refused there, with a reason.
        client.take_events().iter().filter(|e| matches!(e, Event::Error { .. })).count() as u32
    };
    let chatting = Instant::now();
    while chatting.elapsed() < Duration::from_secs(8) {
        let due = (chatting.elapsed().as_secs_f64() * 450.0) as u32;
        while attempted < due {
            client.engine.send_text(c, &format!("{attempted:06}{text}")).unwrap();
            attempted += 1;
        }
        refused += count_refusals(&mut client);
        std::thread::sleep(Duration::from_millis(5));
    }
    let grown = resident_kib(pid).saturating_sub(before);
    assert!(grown < 35 * 1024, "the listener grew by {grown} KiB while nobody read its output");
    for _ in 0..20 {
        std::thread::sleep(Duration::from_millis(50));
        refused += count_refusals(&mut client);
    }
    let sent = attempted - refused;
    assert!(refused > 0, "the peer was slowed: its own output filled and it was told");
    // Now read: every message that was sent arrives, in order.
    let (tx, lines) = crossbeam_channel::unbounded();
    let stdout = child.0.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let (mut received, mut last) = (0u32, None::<u32>);
    while received < sent {
        let line = lines.recv_timeout(Duration::from_secs(20)).unwrap_or_else(|_| {
            panic!("{received} of {sent} sent messages arrived ({refused} of {attempted} were refused)")
        });
        let Ok(event) = serde_json::from_str::<Value>(&line) else { continue };
        assert_ne!(event["event"], "lost", "the listener lost its peer: {line}");
        if event["event"] == "message" {
            let n: u32 = event["text"].as_str().unwrap()[..6].parse().unwrap();
            assert!(last.is_none_or(|last| n > last), "{n} came after {last:?}");
            last = Some(n);
            received += 1;
        }
    }
}

/// Regression: `--json` carried C1 controls, text-direction marks and
/// invisible characters unescaped, where text mode escapes them.
#[test]
fn json_output_escapes_what_would_drive_or_fool_a_terminal() {
    use crate::support::RawPeer;
    use peerconn::net::frame::Frame;
    let listener = Peerconn::start(&["listen", "--json", "--name", "reader", "--bind", "127.0.0.1"]);
    let addr: std::net::SocketAddr = listener.listening().as_str().parse().expect("an address");
    let (mut raw, _) = RawPeer::hello(addr, "writer");
    listener.event_named("connected");
    let text = "pay \u{202e}txt.exe\u{85} to al\u{200b}ice";
    raw.send(&Frame::Chat(text.into()));
    let line = listener.line();
    assert!(line.is_ascii(), "the line carries the characters raw: {line:?}");
    let event: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(event["event"], "message");
    assert_eq!(event["text"], text, "a program still reads exactly what was sent");
}

/// Regression: `--code X` showed the pairing code to every local user in
/// the process list; `--code -` and PEERCONN_CODE keep it out of it.
#[test]
fn a_pairing_code_from_standard_input_or_the_environment_stays_out_of_the_process_list() {
    let code = "4821-0937";
    for how in ["stdin", "env"] {
        let listener = Peerconn::start(&["listen", "--json", "--once", "--bind", "127.0.0.1", "--code", code]);
        assert_eq!(listener.event_named("pairing_code")["code"], code);
        let addr = listener.listening().as_str().to_owned();
        let mut command = Command::new(env!("CARGO_BIN_EXE_peerconn"));
        command.args(["connect", &addr, "--json"]);
        if how == "stdin" {
            command.args(["--code", "-"]);
        } else {
            command.env("PEERCONN_CODE", code);
        }
        let mut client = Peerconn::spawn(command, "peerconn connect");
        if how == "stdin" {
            client.say(code);
        }
        let cmdline = std::fs::read(format!("/proc/{}/cmdline", client.child.id())).unwrap_or_default();
        assert!(!String::from_utf8_lossy(&cmdline).contains(code), "{how}: the code is in the process list");
        client.event_named("key");
        let connected = client.event_named("connected");
        assert_eq!(connected["trust"], "verified", "{how}: the code was proven");
        client.say("hello with a proven code");
        assert_eq!(listener.event_named("connected")["trust"], "verified");
        assert_eq!(listener.event_named("message")["text"], "hello with a proven code");
        client.end_input();
        let (status, err) = client.finish();
        assert!(status.success(), "{how}: {status} {err}");
    }
}

/// A `peerconn` whose key, known peers and log live in `home`, so that it
/// can be started again as the same installation.
fn installed(home: &TempDir, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_peerconn"));
    command.args(args).env("PEERCONN_DATA_DIR", &home.0).env("PEERCONN_CONFIG_DIR", &home.0);
    command
}

/// The next `event` line, skipping the others.
fn until_event(p: &Peerconn, event: &str) -> Value {
    loop {
        let value = p.event();
        if value["event"] == event {
            return value;
        }
        assert_ne!(value["event"], "file_failed", "{value}");
    }
}

const MIB: u64 = 1024 * 1024;

/// Regression for resume: the receiving program is killed (SIGKILL)
/// halfway through a file and started again with the same folders; the
/// same sender sends the file again and only the rest crosses the network.
#[test]
fn a_receiver_killed_halfway_resumes_the_file_when_started_again() {
    use crate::support::{fast_config, noise, Node, Relay};
    use peerconn::net::Event;
    let (home, down, outbox) = (temp_dir(), downloads_dir(), temp_dir());
    let down_path = down.0.display().to_string();
    let bytes = noise(48 * MIB as usize, 41);
    let file = outbox.0.join("backup.zip");
    std::fs::write(&file, &bytes).unwrap();
    let args =
        ["listen", "--json", "--bind", "127.0.0.1", "--name", "den", "--accept-files", "--downloads", &down_path];
    let start = || {
        let listener = Peerconn::spawn(installed(&home, &args), "the receiver starts");
        listener.event_named("key");
        let addr: std::net::SocketAddr = listener.listening().as_str().parse().unwrap();
        (listener, addr)
    };
    let (mut listener, addr) = start();
    let relay = Relay::new(addr, Some(40_000_000));
    let mut sender = Node::with_config(fast_config());
    let c = sender.engine.connect("laptop", relay.addr).unwrap();
    sender.connected(c);
    sender.engine.send_file(c, &file);
    let before = loop {
        let progress = until_event(&listener, "file_progress");
        let bytes = progress["bytes"].as_u64().unwrap();
        if bytes >= 48 * MIB * 2 / 5 {
            break bytes;
        }
    };
    listener.child.kill().unwrap();
    let _ = listener.child.wait();
    sender.wait_within(Duration::from_secs(20), "the transfer failed", |e| match e {
        Event::FileFailed { .. } => Some(()),
        _ => None,
    });
    drop(relay);

    let (listener, addr) = start();
    let relay = Relay::new(addr, None);
    let c = sender.engine.connect("laptop", relay.addr).unwrap();
    sender.connected(c);
    sender.engine.send_file(c, &file);
    let resumed = until_event(&listener, "file_resumed");
    let offset = resumed["offset"].as_u64().unwrap();
    assert_eq!(resumed["name"], "backup.zip");
    assert_eq!(resumed["discarded"], 0, "{resumed}");
    // Killed, it lost only what it had not handed to the disk yet: at most
    // a window of data and a block.
    assert!(offset + 5 * MIB >= before, "resumed at {offset} after {before} bytes had arrived");
    let received = until_event(&listener, "file_received");
    assert_eq!(received["blake3"], blake3::hash(&bytes).to_hex().as_str());
    assert_eq!(std::fs::read(down.0.join("backup.zip")).unwrap(), bytes);
    let rest = 48 * MIB - offset;
    assert!(relay.carried() <= rest + rest / 2000 + 64 * 1024, "{} bytes for the {rest} missing", relay.carried());
}

/// Regression for resume: the sending program is killed halfway; sending
/// the same file again from the same installation picks up where the
/// receiver can prove it was.
#[test]
fn a_sender_killed_halfway_resumes_when_it_sends_the_file_again() {
    use crate::support::{fast_config, noise, Node, Relay};
    use peerconn::net::{EngineConfig, Event};
    let (home, down, outbox) = (temp_dir(), downloads_dir(), temp_dir());
    let bytes = noise(48 * MIB as usize, 42);
    let file = outbox.0.join("photos.zip");
    std::fs::write(&file, &bytes).unwrap();
    let config = EngineConfig { downloads: down.0.clone(), accept_files_from_everyone: true, ..fast_config() };
    let mut receiver = Node::with_config(config);
    let (l, addr) = receiver.listen("den");
    let relay = Relay::new(addr, Some(40_000_000));
    let target = relay.addr.to_string();
    let file_arg = file.display().to_string();
    let mut first = Peerconn::spawn(installed(&home, &["send", &target, &file_arg, "--json"]), "the sender starts");
    let t = receiver.wait("the offer", |e| match e {
        Event::FileIncoming { id, transfer, .. } if *id == l => Some(*transfer),
        _ => None,
    });
    let before = receiver.wait_within(Duration::from_secs(30), "progress", |e| match e {
        Event::FileProgress { transfer, bytes, .. } if *transfer == t && *bytes >= 48 * MIB * 2 / 5 => Some(*bytes),
        _ => None,
    });
    first.child.kill().unwrap();
    let _ = first.child.wait();
    receiver.wait_within(Duration::from_secs(20), "the transfer failed", |e| match e {
        Event::FileFailed { transfer, .. } if *transfer == t => Some(()),
        _ => None,
    });
    drop(relay);

    let (l, addr) = receiver.listen("den again");
    let relay = Relay::new(addr, None);
    let target = relay.addr.to_string();
    let again = Peerconn::spawn(installed(&home, &["send", &target, &file_arg, "--json"]), "the sender starts again");
    let resumed = until_event(&again, "file_resumed");
    let offset = resumed["offset"].as_u64().unwrap();
    assert!(offset + 5 * MIB >= before && offset < 48 * MIB, "resumed at {offset} after {before} had arrived");
    assert_eq!(until_event(&again, "file_sent")["name"], "photos.zip");
    let (status, stderr) = again.finish();
    assert!(status.success(), "{stderr}");
    let (t, (at, discarded)) = receiver.wait("resumed", |e| match e {
        Event::FileResumed { id, transfer, offset, discarded, .. } if *id == l => {
            Some((*transfer, (*offset, *discarded)))
        }
        _ => None,
    });
    assert_eq!((at, discarded), (offset, 0));
    receiver.wait_within(Duration::from_secs(30), "received", |e| match e {
        Event::FileReceived { transfer, .. } if *transfer == t => Some(()),
        _ => None,
    });
    assert_eq!(std::fs::read(down.0.join("photos.zip")).unwrap(), bytes);
    let rest = 48 * MIB - offset;
    assert!(relay.carried() <= rest + rest / 2000 + 64 * 1024, "{} bytes for the {rest} missing", relay.carried());
}

#[test]
fn send_takes_a_folder_whole_and_the_listener_stores_it_under_its_name() {
    let down = downloads_dir();
    let down_path = down.0.display().to_string();
    let (alice, addr) = listen_json(&["--once", "--accept-files", "--downloads", &down_path]);
    let outbox = temp_dir();
    let root = outbox.0.join("trip");
    std::fs::create_dir_all(root.join("day 1/empty")).unwrap();
    std::fs::write(root.join("day 1/map.png"), crate::support::noise(200_000, 5)).unwrap();
    std::fs::write(root.join("notes.txt"), b"pack the tent").unwrap();
    let bob = Peerconn::start(&["send", &addr, root.to_str().unwrap(), "--json"]);
    assert_eq!(until_event(&bob, "file_sent")["name"], "trip");
    assert!(bob.finish().0.success());
    let offered = until_event(&alice, "file_offered");
    assert_eq!(offered["folder"], serde_json::json!({"files": 2, "folders": 2}), "{offered}");
    assert_eq!(offered["size"], 200_000 + 13);
    let received = until_event(&alice, "file_received");
    assert_eq!(received["path"], down.0.join("trip").display().to_string());
    assert_eq!(std::fs::read(down.0.join("trip/day 1/map.png")).unwrap(), crate::support::noise(200_000, 5));
    assert_eq!(std::fs::read(down.0.join("trip/notes.txt")).unwrap(), b"pack the tent");
    assert!(down.0.join("trip/day 1/empty").is_dir());
}

/// `listen` prints its link; `connect LINK` lets in only the key in it,
/// proves the code it carries, and reads a broken link as a usage error.
#[test]
fn connect_by_the_listeners_link_lets_in_only_its_key_and_proves_its_code() {
    let listener = Peerconn::start(&["listen", "--json", "--bind", "127.0.0.1", "--code", "new", "--name", "alice"]);
    let code = listener.event_named("pairing_code")["code"].as_str().unwrap().to_owned();
    let addr = listener.event_named("listening")["addr"].as_str().unwrap().to_owned();
    let url = listener.event_named("link")["url"].as_str().unwrap().to_owned();
    assert!(url.starts_with(&format!("peerconn://{addr}?code={code}#")), "{url}");

    let mut bob = Peerconn::start(&["connect", &url, "--json", "--name", "bob"]);
    let connected = bob.event_named("connected");
    assert_eq!((&connected["fingerprint"], &connected["trust"]), (&listener.key.as_str().into(), &"verified".into()));
    assert_eq!(listener.event_named("connected")["trust"], "verified", "the link's code was proven");
    bob.end_input();
    assert!(bob.finish().0.success());
    assert_eq!(listener.event_named("lost")["kind"], "peer_closed");
    listener.event_named("listening");

    // The same listener behind a link whose key is another: refused, and
    // the reason says where the key came from.
    let last = url.chars().last().unwrap();
    let wrong = format!("{}{}", &url[..url.len() - 1], if last == '0' { '1' } else { '0' });
    let bob = Peerconn::start(&["connect", &wrong, "--json", "--name", "bob"]);
    let lost = bob.event_named("lost");
    assert_eq!(lost["kind"], "wrong_key", "{lost}");
    let (status, err) = bob.finish();
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("not the key") && err.contains("in the link"), "{err}");

    let (status, _, err) = run(&["connect", &url[..url.find('#').unwrap()]]);
    assert_eq!(status.code(), Some(2));
    assert!(err.contains("this link is not whole: it has no key after '#'"), "{err}");
    let (status, _, err) = run(&["send", &url.replace(&code, "nope-nope"), "Cargo.toml", "--code", "1234-5678"]);
    assert_eq!(status.code(), Some(2));
    assert!(err.contains("another pairing code than the link carries"), "{err}");
    let mut listener = listener;
    let _ = listener.child.kill();
}

/// `connect --reconnect`: a listener killed and started again on its port
/// (same installation, same key) is reached again without anyone typing
/// anything; when it then ends the conversation on purpose (Ctrl-C says a
/// normal bye, not "leaving, back soon"), the client stops and exits.
#[test]
fn connect_with_reconnect_comes_back_after_the_listener_restarts_and_stops_when_it_is_closed_on_purpose() {
    let home = temp_dir();
    let listener = |port: &str| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_peerconn"));
        command
            .args(["listen", "--bind", "127.0.0.1", "--port", port, "--name", "alice", "--json"])
            .env("PEERCONN_DATA_DIR", &home.0)
            .env("PEERCONN_CONFIG_DIR", &home.0);
        let listener = Peerconn::spawn(command, "the listener starts");
        assert_eq!(listener.event()["event"], "key");
        let addr = listener.listening();
        (listener, addr)
    };
    let (mut alice, addr) = listener("0");
    let port = addr.rsplit(':').next().unwrap().to_owned();
    let mut bob = Peerconn::start(&["connect", &addr, "--reconnect", "--name", "bob", "--json"]);
    bob.event_named("connected");
    alice.event_named("connected");

    alice.child.kill().unwrap();
    let _ = alice.child.wait();
    let lost = bob.event_named("lost");
    assert_ne!(lost["kind"], "peer_left", "{lost}");
    let retry = bob.event_named("reconnecting");
    assert_eq!(retry["attempt"], 1);
    let after = retry["after_ms"].as_u64().unwrap();
    assert!((800..=1200).contains(&after), "first retry after {after} ms, not 1 s ± 20 %");

    let (again, _) = listener(&port);
    // Attempts may fail until the listener is up; each is followed by the
    // next wait. Then it is connected again, by itself.
    loop {
        let event = bob.event();
        match event["event"].as_str() {
            Some("connected") => break,
            Some("connecting" | "lost" | "reconnecting") => continue,
            _ => panic!("unexpected {event}"),
        }
    }
    again.event_named("connected");
    bob.say("back again");
    assert_eq!(again.event_named("message")["text"], "back again");

    let pid = again.child.id().to_string();
    assert!(Command::new("kill").args(["-INT", &pid]).status().unwrap().success());
    let lost = bob.event_named("lost");
    assert_eq!(lost["kind"], "peer_closed", "{lost}");
    // Final: no "reconnecting" follows; it exits.
    let (status, _) = bob.finish();
    assert!(status.success(), "{status}");
    assert!(again.finish().0.success());
}
