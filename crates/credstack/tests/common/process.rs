//! A real `credstack serve` process, for tests that kill, restart or run
//! several of them.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Process {
    child: Child,
    pub base: String,
}

impl Process {
    /// Starts `credstack serve` on a free loopback port with `store_args`
    /// (`--data DIR` or `--database-url URL`) and any further arguments,
    /// `key` as its admin key, its log appended to `log`; returns once
    /// `/healthz` answers.
    pub async fn spawn(store_args: &[&str], key: &str, log: &Path) -> Process {
        Process::spawn_with_env(store_args, key, log, &[]).await
    }

    /// As [`Process::spawn`], with these environment variables set too.
    pub async fn spawn_with_env(
        store_args: &[&str],
        key: &str,
        log: &Path,
        env: &[(&str, &str)],
    ) -> Process {
        Process::start(free_port(), store_args, key, log, env).await
    }

    /// [`Process::spawn`] on this port: a server restarted on the port its
    /// clients know.
    pub async fn spawn_on(port: u16, store_args: &[&str], key: &str, log: &Path) -> Process {
        Process::start(port, store_args, key, log, &[]).await
    }

    async fn start(
        port: u16,
        store_args: &[&str],
        key: &str,
        log: &Path,
        env: &[(&str, &str)],
    ) -> Process {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_credstack"))
            .args(["serve", "--addr", &format!("127.0.0.1:{port}")])
            .args(store_args)
            .env("CREDSTACK_ADMIN_KEY", key)
            .env_remove("CREDSTACK_ADDR")
            .env_remove("CREDSTACK_DATA")
            .env_remove("DATABASE_URL")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn credstack serve");
        let mut process = Process {
            child,
            base: format!("http://127.0.0.1:{port}"),
        };
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = process.child.try_wait().expect("child status") {
                panic!("credstack serve exited early: {status}");
            }
            let health = client.get(format!("{}/healthz", process.base)).send().await;
            if health.is_ok_and(|r| r.status().is_success()) {
                return process;
            }
            assert!(Instant::now() < deadline, "server did not come up");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGKILL, and reap.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback port nothing listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("free port")
        .local_addr()
        .unwrap()
        .port()
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Prints the end of the servers' log when the test fails.
pub struct LogOnFailure(pub std::path::PathBuf);

impl Drop for LogOnFailure {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.0).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!("--- server log (last lines) ---");
            for line in tail.iter().rev() {
                eprintln!("{line}");
            }
        }
    }
}
