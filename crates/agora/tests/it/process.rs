//! Child processes of the `agora` binary: started with a private environment, waited for on
//! `/readyz`, killed like a crash (SIGKILL) or stopped like Kubernetes does (SIGTERM).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const AGORA: &str = env!("CARGO_BIN_EXE_agora");

pub struct Proc {
    pub name: String,
    program: String,
    args: Vec<String>,
    env: Vec<(String, String)>,
    log: PathBuf,
    child: Option<Child>,
}

impl Proc {
    pub fn new(name: &str, args: &[&str], env: &[(String, String)], log_dir: &Path) -> Self {
        Self::new_command(name, AGORA, args, log_dir).with_env(env)
    }

    /// Any program (a test server's launcher, say) run the same way.
    pub fn new_command(name: &str, program: &str, args: &[&str], log_dir: &Path) -> Self {
        Self {
            name: name.to_owned(),
            program: program.to_owned(),
            args: args.iter().map(|s| s.to_string()).collect(),
            env: Vec::new(),
            log: log_dir.join(format!("{name}.log")),
            child: None,
        }
    }

    fn with_env(mut self, env: &[(String, String)]) -> Self {
        self.env = env.to_vec();
        self
    }

    /// Still running (it has not exited on its own).
    pub fn running_ok(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    pub fn start(&mut self) {
        assert!(self.child.is_none(), "{} is already running", self.name);
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).unwrap();
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", std::env::var("HOME").unwrap_or_default())
            .env("AGORA_LOG", "info")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        self.child = Some(cmd.spawn().unwrap());
    }

    pub fn running(&self) -> bool {
        self.child.is_some()
    }

    /// SIGKILL: the process gets no chance to flush, commit or say goodbye.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, as Kubernetes stops a pod; returns how long the process took to exit and whether
    /// it exited cleanly, or `None` if it was still running after `limit` (then it is killed).
    pub fn terminate(&mut self, limit: Duration) -> Option<(Duration, bool)> {
        let mut c = self.child.take()?;
        let started = Instant::now();
        let _ = Command::new("kill").args(["-TERM", &c.id().to_string()]).status();
        while started.elapsed() < limit {
            if let Some(status) = c.try_wait().unwrap() {
                return Some((started.elapsed(), status.success()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = c.kill();
        let _ = c.wait();
        None
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// Waits until `url` answers 200, failing early (with the log) if the process died.
    pub async fn wait_ready(&mut self, url: &str) {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(2)).build().unwrap();
        let deadline = Instant::now() + Duration::from_secs(90);
        while Instant::now() < deadline {
            if let Some(c) = self.child.as_mut()
                && let Some(status) = c.try_wait().unwrap()
            {
                panic!("{} exited with {status} before it was ready:\n{}", self.name, self.log_tail());
            }
            if let Ok(r) = http.get(url).send().await
                && r.status() == 200
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("{} not ready at {url} after 90 s:\n{}", self.name, self.log_tail());
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}
