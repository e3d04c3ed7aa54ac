//! The README runs as written (issue 17): every command of every shell
//! block of README.md is executed, in order, in one temporary directory, by
//! `bash`, with the freshly built `hush` first on the `PATH`. A command that
//! fails fails the test, naming the block and the README line.
//!
//! The directory starts as a checkout does for a reader who follows the
//! README from the repository root: it holds copies of the checked-in inputs
//! the README names (`data/sample`, `models/`) and nothing else; every other
//! file a command reads was made by an earlier command of the README.
//!
//! What is mapped rather than run as printed, and why:
//! - `cargo install --path .`: the binary under test is already built (by
//!   this very `cargo test`) and its directory is first on the `PATH`, which
//!   is what the install achieves.
//! - `cargo run --release -- ARGS`: runs `hush ARGS` (the same binary,
//!   without a second build).
//! - `cargo test ...`: not run. It is the command running this test; running
//!   it here would recurse. It is counted as mapped, not as run.
//! - A command that serves (`hush serve`, `hush quickstart` without
//!   `--no-serve`) is started in the background on a free port instead of
//!   `8080` (other tests may hold 8080); the harness waits until it accepts
//!   connections, and stops it (SIGTERM) when the next server starts or
//!   after the last block. `curl` lines then reach it: `:8080` in them is
//!   rewritten to the port. A `curl` line passes on a 2xx answer, or on the
//!   status its trailing comment names (`# answers 403`).
//! - `pip install ./python ...` (the Python section): not run. Building the
//!   extension means a release build of the whole workspace in the README's
//!   directory; `.ci/run`'s Python step builds and installs it from this
//!   checkout, and its pytest runs the README's `python` block. It is
//!   counted as mapped, not as run.
//! - `.ci/install-test-deps`: not run. It installs Debian packages (with
//!   `sudo`), and `.ci/run` has run it before these tests; the README's
//!   directory here has no `.ci/` either.
//! - `a && b`: each side is planned (and run, or mapped) on its own, in
//!   order, stopping at the first failure, as the shell would; the README's
//!   set-up lines chain a mapped command with a run one.
//! - `export HUSH_DB='postgres://…'` (the deployment section): the URL of a
//!   throwaway PostgreSQL database (`hush_testkit::postgres_url`) instead of
//!   the example host, which does not exist here.
//!
//! Non-shell fences (```` ```python ````, ```` ```toml ````, plain ```` ``` ````)
//! are skipped: Python blocks are run by pytest. The test prints its
//! coverage: blocks run of shell blocks, commands run of commands.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Fence languages the harness runs.
const SHELL_FENCES: [&str; 3] = ["sh", "bash", "shell"];

/// One fenced block of the README.
#[derive(Debug)]
struct Block {
    /// 1-based number among all fences.
    number: usize,
    /// The README line of the opening fence.
    line: usize,
    /// The fence's info string (`sh`, `python`, …).
    language: String,
    /// Its commands, continuation lines joined.
    commands: Vec<Line>,
}

/// One logical command: a line, with any `\`-continued lines after it.
#[derive(Debug, Clone)]
struct Line {
    /// The README line it starts on.
    line: usize,
    /// The command text, continuations joined by spaces.
    text: String,
}

/// The fenced blocks of `readme`, in order. An unclosed fence is an error.
fn blocks(readme: &str) -> Result<Vec<Block>, String> {
    let mut blocks = Vec::new();
    let mut open: Option<Block> = None;
    let mut pending: Option<Line> = None;
    for (index, raw) in readme.lines().enumerate() {
        let number = index + 1;
        let trimmed = raw.trim_start();
        if let Some(info) = trimmed.strip_prefix("```") {
            match open.take() {
                None => {
                    open = Some(Block {
                        number: blocks.len() + 1,
                        line: number,
                        language: info.trim().to_string(),
                        commands: Vec::new(),
                    })
                }
                Some(mut block) => {
                    if let Some(line) = pending.take() {
                        return Err(format!("README.md:{}: a `\\` continues past the end of its block", line.line));
                    }
                    block.commands.retain(|c| !c.text.trim().is_empty());
                    blocks.push(block);
                }
            }
            continue;
        }
        let Some(block) = open.as_mut() else { continue };
        let (text, continues) = match raw.trim_end().strip_suffix('\\') {
            Some(head) => (head.to_string(), true),
            None => (raw.trim_end().to_string(), false),
        };
        let current = match pending.take() {
            Some(mut line) => {
                line.text.push(' ');
                line.text.push_str(text.trim());
                line
            }
            None if text.trim_start().starts_with('#') || text.trim().is_empty() => continue,
            None => Line { line: number, text: text.trim().to_string() },
        };
        if continues {
            pending = Some(current);
        } else {
            block.commands.push(current);
        }
    }
    match open {
        Some(block) => Err(format!("README.md:{}: the fence opened here is never closed", block.line)),
        None => Ok(blocks),
    }
}

/// The commands of an `a && b && c` list, in order: split at each `&&`
/// outside quotes and before any comment (which stays with the last).
fn and_list(text: &str) -> Vec<String> {
    let (mut parts, mut current) = (Vec::new(), String::new());
    let (mut quote, mut comment) = (None, false);
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if !comment && quote.is_none() && rest.starts_with(" && ") {
            parts.push(std::mem::take(&mut current).trim().to_string());
            rest = &rest[4..];
            continue;
        }
        match (c, quote) {
            (_, _) if comment => {}
            ('\'', None) | ('"', None) => quote = Some(c),
            (q, Some(open)) if q == open => quote = None,
            ('#', None) if current.is_empty() || current.ends_with(char::is_whitespace) => comment = true,
            _ => {}
        }
        current.push(c);
        rest = &rest[c.len_utf8()..];
    }
    parts.push(current.trim().to_string());
    parts
}

/// What the harness does with one README command.
#[derive(Debug, PartialEq)]
enum Plan {
    /// Run this text with bash.
    Run(String),
    /// Start this text with bash in the background: it serves.
    Serve(String),
    /// Set an environment variable for the rest of the README (the value is
    /// expanded by bash, as the shell would).
    Export { name: String, value: String },
    /// Not run, with the reason (see the module docs).
    Mapped(&'static str),
}

/// The shell words of `text` before any comment, split on blanks (enough for
/// telling what a command is; bash itself runs the text).
fn words(text: &str) -> Vec<&str> {
    text.split('#').next().unwrap_or("").split_whitespace().collect()
}

/// Decides how to run one README command (see the module docs for the mappings).
fn plan(text: &str, pg_url: &dyn Fn() -> String) -> Plan {
    let w = words(text);
    match w.as_slice() {
        ["cargo", "install", ..] => return Plan::Mapped("the built hush is first on the PATH"),
        ["cargo", "test", ..] => return Plan::Mapped("this is the command running this test"),
        [".ci/install-test-deps", ..] => return Plan::Mapped("run by .ci/run before the tests"),
        ["pip", "install", "./python", ..] => {
            return Plan::Mapped("built, installed and tested (the README's python block too) by .ci/run's Python step")
        }
        ["cargo", "run", ..] => {
            let rest = text.split_once(" -- ").map(|(_, rest)| rest).unwrap_or("");
            return plan(&format!("hush {rest}"), pg_url);
        }
        ["export", assignment, ..] => {
            let (name, value) = assignment.split_once('=').unwrap_or((assignment, ""));
            let value = if name == "HUSH_DB" && value.trim_matches(['\'', '"']).starts_with("postgres") {
                format!("'{}'", pg_url())
            } else {
                text.trim_start_matches("export").trim().split_once('=').map(|(_, v)| v.to_string()).unwrap_or_default()
            };
            return Plan::Export { name: name.to_string(), value };
        }
        _ => {}
    }
    let serves = w.first() == Some(&"hush")
        && (w.contains(&"serve") || (w.contains(&"quickstart") && !w.contains(&"--no-serve")));
    if serves {
        Plan::Serve(text.to_string())
    } else {
        Plan::Run(text.to_string())
    }
}

/// A server the README started, stopped when dropped.
struct Server {
    child: Child,
    /// The README command that started it.
    what: String,
}

impl Server {
    fn stop(mut self) {
        // SIGTERM, the documented way to stop it; then make sure.
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The README's session: the directory, the environment the README's
/// `export`s built, and the server it runs.
struct Session {
    dir: PathBuf,
    path: String,
    env: Vec<(String, String)>,
    port: u16,
    server: Option<Server>,
    pg_url: Option<String>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl Session {
    fn bash(&self, script: &str) -> Command {
        let mut command = Command::new("bash");
        command.args(["-o", "pipefail", "-c", script]).current_dir(&self.dir).env("PATH", &self.path);
        for name in ["HUSH_DB", "HUSH_PSEUDONYM_KEY", "HUSH_KEY_FILE", "HUSH_MODEL", "HUSH_BIND", "HUSH_API_KEY"] {
            command.env_remove(name);
        }
        command.env("NO_COLOR", "1");
        for (name, value) in &self.env {
            command.env(name, value);
        }
        command
    }

    /// `text` with the documented address rewritten to the harness's port.
    fn local(&self, text: &str) -> String {
        let port = format!(":{}", self.port);
        text.replace(":8080", &port)
    }

    fn stop_server(&mut self) {
        if let Some(server) = self.server.take() {
            server.stop();
        }
    }

    /// Runs one command; `Err` says why it failed.
    fn run(&mut self, line: &Line) -> Result<bool, String> {
        let parts = and_list(&line.text);
        if parts.len() > 1 {
            let mut ran = false;
            for part in parts {
                ran |= self.run(&Line { line: line.line, text: part })?;
            }
            return Ok(ran);
        }
        let pg = || self.pg_url.clone().unwrap_or_else(hush_testkit::postgres_url);
        let planned = plan(&line.text, &pg);
        match planned {
            Plan::Mapped(why) => {
                eprintln!("  mapped, not run ({why}): {}", line.text);
                Ok(false)
            }
            Plan::Export { name, value } => {
                if name == "HUSH_DB" && value.contains("postgres") {
                    self.pg_url = Some(value.trim_matches('\'').to_string());
                }
                let out = self.bash(&format!("printf %s {value}")).output().map_err(|e| e.to_string())?;
                if !out.status.success() {
                    return Err(format!("expanding the value failed: {}", String::from_utf8_lossy(&out.stderr)));
                }
                let value = String::from_utf8_lossy(&out.stdout).into_owned();
                self.env.retain(|(n, _)| n != &name);
                self.env.push((name, value));
                Ok(true)
            }
            Plan::Run(text) => {
                let text = self.local(&text);
                let expected = expected_status(&text);
                let script = if words(&text).first() == Some(&"curl") {
                    // The status goes to stderr, after the body.
                    format!("{} -sS -w '\\n%{{stderr}}%{{http_code}}'", text.split(" #").next().unwrap_or(&text))
                } else {
                    text.clone()
                };
                let out = self.bash(&script).output().map_err(|e| e.to_string())?;
                let stdout = String::from_utf8_lossy(&out.stdout);
                let stderr = String::from_utf8_lossy(&out.stderr);
                if !out.status.success() {
                    return Err(format!("exit status {}\nstdout:\n{stdout}\nstderr:\n{stderr}", out.status));
                }
                if words(&text).first() == Some(&"curl") {
                    let status: u16 = stderr.trim().rsplit('\n').next().unwrap_or("").trim().parse().unwrap_or(0);
                    let fine = match expected {
                        Some(code) => status == code,
                        None => (200..300).contains(&status),
                    };
                    if !fine {
                        return Err(format!(
                            "HTTP status {status}, expected {}\nbody:\n{stdout}",
                            expected.map_or("2xx".to_string(), |c| c.to_string())
                        ));
                    }
                }
                Ok(true)
            }
            Plan::Serve(text) => {
                self.stop_server();
                self.port = free_port();
                let mut text = self.local(&text);
                if !text.contains("--bind") {
                    text = format!("{} --bind 127.0.0.1:{}", text.split(" #").next().unwrap_or(&text), self.port);
                }
                let text = text.replace("0.0.0.0:", "127.0.0.1:");
                let log = self.dir.join(format!("server-{}.log", line.line));
                let file = std::fs::File::create(&log).map_err(|e| e.to_string())?;
                let child = self
                    .bash(&format!("exec {text}"))
                    .stdout(file.try_clone().map_err(|e| e.to_string())?)
                    .stderr(file)
                    .stdin(Stdio::null())
                    .spawn()
                    .map_err(|e| e.to_string())?;
                let mut server = Server { child, what: text.clone() };
                let deadline = Instant::now() + Duration::from_secs(300);
                loop {
                    if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                        break;
                    }
                    if let Ok(Some(status)) = server.child.try_wait() {
                        let log = std::fs::read_to_string(&log).unwrap_or_default();
                        return Err(format!("the server exited ({status}) before accepting connections:\n{log}"));
                    }
                    if Instant::now() > deadline {
                        return Err("the server did not accept connections within 300 s".into());
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                eprintln!("  serving on 127.0.0.1:{} ({})", self.port, server.what);
                self.server = Some(server);
                Ok(true)
            }
        }
    }
}

/// The status a `curl` line's trailing comment names (`# answers 403`), if any.
fn expected_status(text: &str) -> Option<u16> {
    let comment = text.split_once(" #")?.1;
    let after = comment.split("answers ").nth(1)?;
    after.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

#[test]
fn every_shell_block_of_the_readme_runs_as_written() {
    let root = crate::common::root();
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let blocks = blocks(&readme).unwrap_or_else(|e| panic!("{e}"));
    let dir = tempfile::tempdir().unwrap();
    copy_tree(&root.join("data/sample"), &dir.path().join("data/sample"));
    copy_tree(&root.join("models"), &dir.path().join("models"));
    let bin = Path::new(env!("CARGO_BIN_EXE_hush")).parent().unwrap().to_path_buf();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let mut session =
        Session { dir: dir.path().to_path_buf(), path, env: Vec::new(), port: 8080, server: None, pg_url: None };
    let (mut shell_blocks, mut blocks_run, mut commands, mut commands_run) = (0, 0, 0, 0);
    for block in &blocks {
        if !SHELL_FENCES.contains(&block.language.as_str()) {
            eprintln!(
                "README block {} (line {}, ```{}): not a shell block, skipped",
                block.number, block.line, block.language
            );
            continue;
        }
        shell_blocks += 1;
        eprintln!("README block {} (line {}): {} commands", block.number, block.line, block.commands.len());
        let mut ran_any = false;
        for line in &block.commands {
            commands += 1;
            let started = Instant::now();
            match session.run(line) {
                Ok(ran) => {
                    if ran {
                        commands_run += 1;
                        ran_any = true;
                        eprintln!(
                            "  ok {:>6.1}s README.md:{}: {}",
                            started.elapsed().as_secs_f64(),
                            line.line,
                            line.text
                        );
                    }
                }
                Err(why) => {
                    session.stop_server();
                    panic!(
                        "README block {} (opened at line {}), README.md:{}: `{}` failed: {why}",
                        block.number, block.line, line.line, line.text
                    );
                }
            }
        }
        if ran_any {
            blocks_run += 1;
        }
    }
    session.stop_server();
    eprintln!(
        "README coverage: {blocks_run}/{shell_blocks} shell blocks run, {commands_run}/{commands} commands run \
         (the rest mapped, see tests/integration/readme.rs)"
    );
    assert!(shell_blocks >= 3, "the README lost its command blocks? found {shell_blocks}");
    assert_eq!(blocks_run, shell_blocks, "every shell block runs at least one command");
}

#[test]
fn the_parser_joins_continuations_skips_comments_and_names_lines() {
    let text = "intro\n```sh\n# a comment\nhush init\nhush extract --a \\\n     --b   # why\n\n```\n```python\nprint(1)\n```\n";
    let found = blocks(text).unwrap();
    assert_eq!(found.len(), 2);
    assert_eq!(found[0].language, "sh");
    let lines: Vec<(usize, &str)> = found[0].commands.iter().map(|c| (c.line, c.text.as_str())).collect();
    assert_eq!(lines, vec![(4, "hush init"), (5, "hush extract --a --b   # why")]);
    assert_eq!(found[1].language, "python");
    assert!(blocks("```sh\nhush init\n").unwrap_err().contains("README.md:1"));
}

#[test]
fn cargo_lines_map_to_the_built_binary_and_servers_go_to_the_background() {
    let no_pg = || -> String { panic!("no PostgreSQL needed") };
    assert_eq!(
        plan("cargo run --release -- quickstart     # the main job", &no_pg),
        Plan::Serve("hush quickstart     # the main job".into())
    );
    assert_eq!(plan("hush quickstart --no-serve", &no_pg), Plan::Run("hush quickstart --no-serve".into()));
    assert!(matches!(plan("cargo test --workspace", &no_pg), Plan::Mapped(_)));
    assert!(matches!(plan("cargo install --path .", &no_pg), Plan::Mapped(_)));
    assert!(matches!(plan(".ci/install-test-deps", &no_pg), Plan::Mapped(_)));
    assert_eq!(
        and_list("cargo install --path . && hush quickstart  # a && b"),
        ["cargo install --path .", "hush quickstart  # a && b"]
    );
    assert_eq!(and_list("printf 'a && b' && echo \"c && d\""), ["printf 'a && b'", "echo \"c && d\""]);
    assert_eq!(and_list("hush init"), ["hush init"]);
    assert!(matches!(plan("pip install ./python pyarrow      # builds", &no_pg), Plan::Mapped(_)));
    assert!(matches!(plan("pip install pandas", &no_pg), Plan::Run(_)));
    assert_eq!(
        plan("export HUSH_DB='postgres://h:5432/hush?sslmode=verify-full'", &|| "postgres://local/db".into()),
        Plan::Export { name: "HUSH_DB".into(), value: "'postgres://local/db'".into() }
    );
    assert_eq!(expected_status("curl -X GET x   # answers 403 now"), Some(403));
    assert_eq!(expected_status("curl x"), None);
}
