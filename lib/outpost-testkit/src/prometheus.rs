//! Debian's `prometheus` server on `127.0.0.1`, scraping targets found through file-based
//! service discovery, with a client for its HTTP query API.
//!
//! The configuration and the TSDB live in a directory of the caller's (a temporary one in
//! tests); targets are written to `<dir>/targets.json` (file_sd, re-read every second), so a
//! test can add and remove scraped processes while the server runs.

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::client::{Req, send_blocking};
use crate::{START_DEADLINE, free_port, poll};

/// A series' labels.
pub type Labels = BTreeMap<String, String>;

/// A series of a range vector: its labels and `(timestamp in seconds, value)` samples.
pub type Series = (Labels, Vec<(f64, f64)>);

/// Where Debian installs the server.
pub const PROMETHEUS_BINARY: &str = "/usr/bin/prometheus";

/// A scrape target: its address and the labels Prometheus gives its series.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScrapeTarget {
    /// `host:port` of the `/metrics` endpoint.
    pub addr: SocketAddr,
    /// Extra labels (`host`, `role`, ...).
    pub labels: BTreeMap<String, String>,
}

impl ScrapeTarget {
    /// A target without extra labels.
    pub fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            labels: BTreeMap::new(),
        }
    }

    /// Adds a label.
    #[must_use]
    pub fn label(mut self, name: &str, value: &str) -> Self {
        self.labels.insert(name.to_owned(), value.to_owned());
        self
    }
}

/// A running Prometheus server; killed when dropped.
#[derive(Debug)]
pub struct Prometheus {
    child: Child,
    addr: SocketAddr,
    dir: PathBuf,
}

impl Prometheus {
    /// Starts the server with its configuration and data in `dir` (created if missing),
    /// scraping the targets of `<dir>/targets.json` every `scrape_interval` (job `outpost`),
    /// and waits until it answers `/-/ready`.
    ///
    /// # Errors
    /// The files cannot be written, the binary cannot be started, or it is not ready within
    /// 30 s (the error holds its log).
    pub fn start(
        dir: &Path,
        scrape_interval: Duration,
        targets: &[ScrapeTarget],
    ) -> io::Result<Self> {
        fs_err::create_dir_all(dir)?;
        let ms = scrape_interval.as_millis().max(100);
        // The timeout may not exceed the interval.
        let timeout = (ms * 9 / 10).max(100);
        let config = dir.join("prometheus.yml");
        let targets_file = dir.join("targets.json");
        fs_err::write(
            &config,
            format!(
                "global: {{scrape_interval: {ms}ms, scrape_timeout: {timeout}ms, evaluation_interval: {ms}ms}}\n\
                 scrape_configs:\n  - job_name: outpost\n    file_sd_configs:\n      - files: [\"{}\"]\n        refresh_interval: 1s\n",
                targets_file.display()
            ),
        )?;
        let mut server = Self::spawn(dir, &config)?;
        server.set_targets(targets)?;
        let ready = poll(START_DEADLINE, || {
            if let Ok(Some(_)) = server.child.try_wait() {
                return Some(false);
            }
            send_blocking(server.addr, &Req::new("GET", "/-/ready"))
                .is_ok_and(|r| r.status == 200)
                .then_some(true)
        });
        if ready != Some(true) {
            return Err(io::Error::other(format!(
                "prometheus did not become ready; its log:\n{}",
                server.log()
            )));
        }
        Ok(server)
    }

    fn spawn(dir: &Path, config: &Path) -> io::Result<Self> {
        let addr: SocketAddr = SocketAddr::from(([127, 0, 0, 1], free_port()?));
        let log = fs_err::File::create(dir.join("prometheus.log"))?.into_file();
        let child = Command::new(PROMETHEUS_BINARY)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("{PROMETHEUS_BINARY}: {e}")))?;
        Ok(Self {
            child,
            addr,
            dir: dir.to_owned(),
        })
    }

    /// The address of its HTTP API (`http://{addr}/api/v1/...`).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its base URL, `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Replaces the scraped targets (written atomically; picked up within about a second).
    ///
    /// # Errors
    /// The file cannot be written.
    pub fn set_targets(&mut self, targets: &[ScrapeTarget]) -> io::Result<()> {
        let groups: Vec<Value> = targets
            .iter()
            .map(|t| {
                serde_json::json!({
                    "targets": [t.addr.to_string()],
                    "labels": t.labels,
                })
            })
            .collect();
        let path = self.dir.join("targets.json");
        let tmp = self.dir.join("targets.json.tmp");
        fs_err::write(&tmp, serde_json::to_vec_pretty(&groups)?)?;
        fs_err::rename(&tmp, &path)
    }

    /// What the server logged so far.
    pub fn log(&self) -> String {
        fs_err::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }

    /// The instant vector of a PromQL `query`: each series' labels and value.
    ///
    /// # Errors
    /// The server cannot be reached, or refused the query (the error holds its answer).
    pub fn query(&self, query: &str) -> io::Result<Vec<(Labels, f64)>> {
        let body = self.api(query)?;
        let Some(result) = body["data"]["result"].as_array() else {
            return Err(io::Error::other(format!(
                "query {query:?}: not a vector: {body}"
            )));
        };
        result
            .iter()
            .map(|s| {
                let labels = labels_of(&s["metric"]);
                let value = s["value"][1]
                    .as_str()
                    .and_then(|v| v.parse::<f64>().ok())
                    .ok_or_else(|| io::Error::other(format!("query {query:?}: bad sample {s}")))?;
                Ok((labels, value))
            })
            .collect()
    }

    /// The raw samples of a range-vector `query` (`metric[5m]`): each series' labels and its
    /// `(timestamp in seconds, value)` pairs as scraped.
    ///
    /// # Errors
    /// The server cannot be reached, or refused the query (the error holds its answer).
    pub fn samples(&self, query: &str) -> io::Result<Vec<Series>> {
        let body = self.api(query)?;
        let Some(result) = body["data"]["result"]
            .as_array()
            .filter(|_| body["data"]["resultType"] == "matrix")
        else {
            return Err(io::Error::other(format!(
                "query {query:?}: not a range vector: {body}"
            )));
        };
        result
            .iter()
            .map(|s| {
                let values = s["values"]
                    .as_array()
                    .map(|vs| {
                        vs.iter()
                            .filter_map(|p| {
                                Some((p[0].as_f64()?, p[1].as_str()?.parse::<f64>().ok()?))
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                Ok((labels_of(&s["metric"]), values))
            })
            .collect()
    }

    fn api(&self, query: &str) -> io::Result<Value> {
        let path = format!("/api/v1/query?query={}", encode(query));
        let r = send_blocking(self.addr, &Req::new("GET", &path))?;
        let body: Value = serde_json::from_slice(&r.body).map_err(io::Error::other)?;
        if r.status != 200 || body["status"] != "success" {
            return Err(io::Error::other(format!(
                "query {query:?}: {} {body}",
                r.status
            )));
        }
        Ok(body)
    }

    /// Polls `check` every 100 ms until it gives a value, for at most `deadline`.
    ///
    /// # Errors
    /// The deadline passed (the error names `what` and holds the server's log).
    pub fn wait_until<T>(
        &self,
        what: &str,
        deadline: Duration,
        mut check: impl FnMut(&Self) -> Option<T>,
    ) -> io::Result<T> {
        let started = std::time::Instant::now();
        loop {
            if let Some(v) = check(self) {
                return Ok(v);
            }
            if started.elapsed() > deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "timed out waiting until {what}; prometheus log:\n{}",
                        self.log()
                    ),
                ));
            }
            // A poll interval while scrapes happen, not a wait for an event.
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        // Our own child, by its pid.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn labels_of(metric: &Value) -> BTreeMap<String, String> {
    metric
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                .collect()
        })
        .unwrap_or_default()
}

/// Percent-encodes a query parameter.
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 2);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
