//! The fleet simulation (`scripts/fleet-sim [N]` runs it at scale): a real `docker-registry`
//! (with its access log), a real Prometheus scraping every daemon through file-based service
//! discovery, and N real daemons, each with its own root, host id, labels, fleet poller and
//! metrics listener on 127.0.0.1. A few hosts are labelled `role: canary-bad`.
//!
//! Four signed generations are pushed with `outpost fleet push`:
//! 1. stable 1.0.0 everywhere;
//! 2. experiment 2.0.0 at 10 %, with a health command that fails on `role: canary-bad` hosts;
//! 3. the same at 50 %;
//! 4. stable 2.0.0 everywhere.
//!
//! After each, the simulation waits until `outpost fleet report --json` (asking Prometheus)
//! shows the expected fleet, computed here from the cohort rule, then prints the report's
//! table. It prints `FLEETSIM` lines with the figures it measured from Prometheus data: how
//! long each host took to apply each generation, from the push to the time the host itself
//! exports in `outpost_fleet_applied_timestamp_seconds` (when it first reached that
//! generation's state; exact, no scrape lag), p50, p99 and max; and beside it the same from
//! the first scrape showing the host on that generation and converged (which adds up to a
//! scrape interval and Prometheus's own delays); after the last one, over a few idle poll intervals, the registry requests
//! per poll and the blobs fetched (from the registry's access log against the daemons' poll
//! counters), and the daemons' resident memory.
//!
//! Knobs (environment): `OUTPOST_FLEET_SIM_HOSTS` (20), `OUTPOST_FLEET_SIM_POLL_MS` (1000),
//! `OUTPOST_FLEET_SIM_IDLE_POLLS` (3).

#![allow(clippy::unwrap_used, clippy::print_stdout)] // a test and its report

mod support;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use outpost_testkit::{Prometheus, Registry, ScrapeTarget};
use serde_json::{Value, json};
use support::*;

const PACKAGE: &str = "app";
/// The health command of the experiment: fails on a host whose configuration labels it
/// `role: canary-bad` (it runs in `<root>/packages/app/<version>`).
const HEALTH: &str = "! grep -q 'role: canary-bad' ../../../outpost.yaml";

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

fn run(cmd: &mut Command) -> std::process::Output {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}",
        stderr(&out),
        stdout(&out)
    );
    out
}

/// One simulated host.
struct Host {
    id: String,
    bad: bool,
    metrics: SocketAddr,
    daemon: Daemon,
}

/// What the fleet must look like after a generation.
#[derive(Debug, PartialEq)]
struct Expected {
    generation: u64,
    /// `(stable, experiment)` -> hosts.
    packages: BTreeMap<(String, String), u64>,
    rolled_back: u64,
}

struct Sim {
    scratch: Scratch,
    registry: Registry,
    prometheus: Prometheus,
    hosts: Vec<Host>,
    config: PathBuf,
    secret_key: PathBuf,
    catalog: Vec<Value>,
    poll: Duration,
}

impl Sim {
    fn start(n: usize, poll: Duration) -> Self {
        let scratch = Scratch::new();
        let registry = Registry::start_with_access_log();
        let dir = scratch.path().to_owned();
        let config = dir.join("cli.yaml");
        fs_err::write(
            &config,
            format!("registry:\n  insecure_hosts: [\"{}\"]\n", registry.host()),
        )
        .unwrap();
        // The signing key pair (no password).
        let (public_key, secret_key) = (dir.join("fleet.pub"), dir.join("fleet.key"));
        run(Command::new("minisign")
            .args(["-G", "-W", "-p"])
            .arg(&public_key)
            .arg("-s")
            .arg(&secret_key));
        // The two versions, pushed as OCI packages.
        let mut catalog = Vec::new();
        for version in ["1.0.0", "2.0.0"] {
            let tree = dir.join(format!("tree-{version}"));
            fs_err::create_dir_all(tree.join("bin")).unwrap();
            fs_err::write(
                tree.join("bin/app"),
                format!("#!/bin/sh\necho app {version}\n"),
            )
            .unwrap();
            let url = format!("oci://{}/pkgs/{PACKAGE}:{version}", registry.host());
            run(Command::new(BIN)
                .arg("pack")
                .arg(&tree)
                .args(["--name", PACKAGE, "--version", version, "--push", &url])
                .arg("--config")
                .arg(&config));
            catalog.push(json!({"package": PACKAGE, "version": version, "url": url}));
        }
        // The hosts: a few are canary-bad, one of them surely in the 10 % cohort.
        let ids: Vec<String> = (0..n).map(|i| format!("sim-host-{i:04}")).collect();
        let first_in_cohort = ids
            .iter()
            .position(|id| outpost_fleet::cohort::bucket(id, PACKAGE, "2.0.0") < 1000);
        let source = format!("oci://{}/fleet/doc:prod", registry.host());
        let mut hosts = Vec::new();
        let mut targets = Vec::new();
        let started = Instant::now();
        for (i, id) in ids.into_iter().enumerate() {
            let bad = Some(i) == first_in_cohort || i % 7 == 3;
            let root = dir.join(&id);
            fs_err::create_dir_all(&root).unwrap();
            let metrics = free_addr();
            fs_err::write(
                root.join("outpost.yaml"),
                format!(
                    "registry:\n  insecure_hosts: [\"{reg}\"]\n\
                     telemetry:\n  listen: \"{metrics}\"\n\
                     fleet:\n  source: \"{source}\"\n  poll_interval: {poll}ms\n  \
                     trusted_keys: [\"{key}\"]\n  host_id: {id}\n  labels:\n    role: {role}\n",
                    reg = registry.host(),
                    poll = poll.as_millis(),
                    key = public_key.display(),
                    role = if bad { "canary-bad" } else { "web" },
                ),
            )
            .unwrap();
            let daemon = Daemon::start(&root);
            targets.push(
                ScrapeTarget::new(metrics)
                    .label("host", &id)
                    .label("role", if bad { "canary-bad" } else { "web" }),
            );
            hosts.push(Host {
                id,
                bad,
                metrics,
                daemon,
            });
        }
        println!(
            "FLEETSIM started {n} daemons in {:.1} s (poll {} ms)",
            started.elapsed().as_secs_f64(),
            poll.as_millis()
        );
        let prometheus =
            Prometheus::start(&dir.join("prometheus"), Duration::from_secs(1), &targets).unwrap();
        Self {
            scratch,
            registry,
            prometheus,
            hosts,
            config,
            secret_key,
            catalog,
            poll,
        }
    }

    /// Signs and pushes generation `generation` with `packages` as its `packages` object;
    /// returns when it was pushed (seconds since the epoch).
    fn push(&self, generation: u64, packages: &Value) -> f64 {
        let doc = json!({
            "generation": generation,
            "expires": "2099-01-01T00:00:00Z",
            "catalog": {"packages": self.catalog},
            "packages": packages,
        });
        let path = self.scratch.path().join(format!("gen-{generation}.json"));
        fs_err::write(&path, serde_json::to_vec_pretty(&doc).unwrap()).unwrap();
        run(Command::new(BIN)
            .args(["fleet", "push"])
            .arg(&path)
            .args([
                "--to",
                &format!("oci://{}/fleet/doc:prod", self.registry.host()),
            ])
            .arg("--sign-key")
            .arg(&self.secret_key)
            .arg("--config")
            .arg(&self.config));
        unix_now()
    }

    fn report(&self, json: bool) -> String {
        let mut cmd = Command::new(BIN);
        cmd.args(["fleet", "report", "--prometheus", &self.prometheus.url()]);
        if json {
            cmd.arg("--json");
        }
        stdout(&run(&mut cmd))
    }

    /// Waits until the report shows `expected`; fails with the last report.
    fn wait_for(&self, expected: &Expected) {
        let n = self.hosts.len() as u64;
        let deadline = Duration::from_secs(120) + self.poll * 4;
        let mut last = Value::Null;
        let got = self.prometheus.wait_until(
            &format!("generation {} everywhere", expected.generation),
            deadline,
            |_| {
                let r: Value = serde_json::from_str(&self.report(true)).unwrap();
                let packages: BTreeMap<(String, String), u64> = r["packages"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|p| {
                        (
                            (
                                p["stable"].as_str().unwrap().to_owned(),
                                p["experiment"].as_str().unwrap().to_owned(),
                            ),
                            p["hosts"].as_u64().unwrap(),
                        )
                    })
                    .collect();
                let rolled_back = r["rolled_back"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|p| p["hosts"].as_u64().unwrap())
                    .sum::<u64>();
                let done = r["hosts"] == n
                    && r["generations"] == json!([{"generation": expected.generation, "hosts": n}])
                    && r["converged"] == n
                    && packages == expected.packages
                    && rolled_back == expected.rolled_back;
                last = r;
                done.then_some(())
            },
        );
        if let Err(e) = got {
            panic!("{e}\nexpected {expected:?}\nlast report: {last:#}");
        }
    }

    /// How long each host took to apply `generation` after `pushed`, from the samples
    /// Prometheus scraped: the first scrape showing the host on that generation and converged
    /// (both series come from the same scrape, so they share its timestamp).
    fn apply_times(&self, generation: u64, pushed: f64) -> Vec<f64> {
        let window = (unix_now() - pushed).ceil() as u64 + 2;
        let by_host = |metric: &str| -> BTreeMap<String, Vec<(f64, f64)>> {
            self.prometheus
                .samples(&format!("{metric}[{window}s]"))
                .unwrap()
                .into_iter()
                .map(|(labels, values)| (labels["host"].clone(), values))
                .collect()
        };
        let generations = by_host("outpost_fleet_generation");
        let converged = by_host("outpost_fleet_converged");
        let mut times: Vec<f64> = self
            .hosts
            .iter()
            .map(|h| {
                let converged_at: Vec<f64> = converged
                    .get(&h.id)
                    .into_iter()
                    .flatten()
                    .filter(|(_, v)| *v == 1.0)
                    .map(|(t, _)| *t)
                    .collect();
                let at = generations
                    .get(&h.id)
                    .into_iter()
                    .flatten()
                    .find(|(t, v)| {
                        *v >= generation as f64 && *t >= pushed && converged_at.contains(t)
                    })
                    .map(|(t, _)| *t);
                at.unwrap_or_else(|| {
                    panic!(
                        "{}: no scrape shows generation {generation} converged",
                        h.id
                    )
                }) - pushed
            })
            .collect();
        times.sort_by(f64::total_cmp);
        times
    }

    /// The expected fleet when experiment 2.0.0 runs at `percent` beside 1.0.0; hosts in the
    /// cohort of `rolled_percent` (or less) that are canary-bad have rolled back once.
    fn with_experiment(&self, generation: u64, percent: u16) -> Expected {
        let mut packages = BTreeMap::new();
        let mut rolled_back = 0;
        for h in &self.hosts {
            let in_cohort = outpost_fleet::cohort::bucket(&h.id, PACKAGE, "2.0.0") < percent * 100;
            let experiment = if in_cohort && !h.bad { "2.0.0" } else { "" };
            if in_cohort && h.bad {
                rolled_back += 1;
            }
            *packages
                .entry(("1.0.0".to_owned(), experiment.to_owned()))
                .or_insert(0) += 1;
        }
        Expected {
            generation,
            packages,
            rolled_back,
        }
    }

    /// How long each host took to apply `generation` after `pushed`, by the time each host
    /// exports (`outpost_fleet_applied_timestamp_seconds`, as Prometheus last scraped it: the
    /// report already shows every host on this generation and converged).
    fn exported_apply_times(&self, generation: u64, pushed: f64) -> Vec<f64> {
        let at: BTreeMap<String, f64> = self
            .prometheus
            .query(&format!(
                "outpost_fleet_applied_timestamp_seconds and on (host) \
                 (outpost_fleet_generation == {generation})"
            ))
            .unwrap()
            .into_iter()
            .map(|(labels, v)| (labels["host"].clone(), v))
            .collect();
        let mut times: Vec<f64> = self
            .hosts
            .iter()
            .map(|h| {
                let t = at.get(&h.id).unwrap_or_else(|| {
                    panic!("{}: no applied time for generation {generation}", h.id)
                });
                // The document is visible a moment before `fleet push` returns.
                (t - pushed).max(0.0)
            })
            .collect();
        times.sort_by(f64::total_cmp);
        times
    }

    fn step(&self, generation: u64, packages: &Value, expected: &Expected) {
        let pushed = self.push(generation, packages);
        self.wait_for(expected);
        let converged = unix_now() - pushed;
        let seen = self.apply_times(generation, pushed);
        let times = self.exported_apply_times(generation, pushed);
        let pct = |times: &[f64], p: f64| {
            times[((p * times.len() as f64).ceil() as usize).clamp(1, times.len()) - 1]
        };
        println!("--- generation {generation} ---\n{}", self.report(false));
        println!(
            "FLEETSIM generation {generation}: {} hosts applied it in p50 {:.1} s, p99 {:.1} s, \
             max {:.1} s after the push (poll {} ms; the hosts' own applied times); first \
             scrape showing it: p50 {:.1} s, p99 {:.1} s (scrape 1 s); fleet as expected after \
             {:.1} s",
            times.len(),
            pct(&times, 0.5),
            pct(&times, 0.99),
            times[times.len() - 1],
            self.poll.as_millis(),
            pct(&seen, 0.5),
            pct(&seen, 0.99),
            converged
        );
    }

    /// The sum of `outpost_fleet_polls_total` over every daemon, scraped directly.
    fn polls(&self) -> f64 {
        self.hosts
            .iter()
            .map(|h| {
                let (status, body) = outpost_testkit::http_get(h.metrics, "/metrics", &[]).unwrap();
                assert_eq!(status, 200);
                String::from_utf8(body)
                    .unwrap()
                    .lines()
                    .find_map(|l| l.strip_prefix("outpost_fleet_polls_total "))
                    .map_or(0.0, |v| v.parse::<f64>().unwrap())
            })
            .sum()
    }

    /// Registry requests (access log lines) so far: `(fleet document requests, blob GETs,
    /// every request)`.
    fn registry_requests(&self) -> (usize, usize, usize) {
        let log = self.registry.log();
        let requests: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("\"HEAD /v2/") || l.contains("\"GET /v2/"))
            .collect();
        let fleet = requests
            .iter()
            .filter(|l| l.contains("/v2/fleet/doc/"))
            .count();
        let blobs = requests
            .iter()
            .filter(|l| l.contains("\"GET /v2/") && l.contains("/blobs/"))
            .count();
        (fleet, blobs, requests.len())
    }

    /// Idle polls against the registry's log, and the daemons' memory.
    fn idle(&self, polls: u64) {
        let (fleet0, blobs0, all0) = self.registry_requests();
        let polls0 = self.polls();
        std::thread::sleep(self.poll * u32::try_from(polls).unwrap());
        let (fleet1, blobs1, all1) = self.registry_requests();
        let polls1 = self.polls();
        let (fleet, blobs, all) = (fleet1 - fleet0, blobs1 - blobs0, all1 - all0);
        let polled = polls1 - polls0;
        let mut log = String::new();
        let _ = write!(
            log,
            "FLEETSIM idle {polls} poll intervals: {polled} polls, {all} registry requests \
             ({fleet} for the fleet document), {blobs} blob downloads: {:.2} requests per poll",
            all as f64 / polled.max(1.0)
        );
        println!("{log}");
        let n = self.hosts.len() as f64;
        assert!(polled >= n, "every host polled while idle: {log}");
        assert_eq!(blobs, 0, "an unchanged document costs no blob: {log}");
        assert_eq!(all, fleet, "only the fleet document is asked for: {log}");
        // A poll may be in flight at either end of the window.
        assert!(
            (all as f64 - polled).abs() <= n,
            "one registry request per poll: {log}"
        );
        let mut rss: Vec<u64> = self
            .hosts
            .iter()
            .map(|h| {
                let status =
                    fs_err::read_to_string(format!("/proc/{}/status", h.daemon.pid())).unwrap();
                status
                    .lines()
                    .find_map(|l| l.strip_prefix("VmRSS:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                    .unwrap()
            })
            .collect();
        rss.sort_unstable();
        println!(
            "FLEETSIM idle daemon RSS with the poller and listener on: median {:.1} MB, max {:.1} MB ({} daemons)",
            rss[rss.len() / 2] as f64 / 1024.0,
            rss[rss.len() - 1] as f64 / 1024.0,
            rss.len()
        );
    }
}

fn experiment(percent: u16) -> Value {
    json!({PACKAGE: {
        "stable": "1.0.0",
        "experiment": {
            "version": "2.0.0",
            "percent": percent,
            "health": {"command": ["/bin/sh", "-c", HEALTH], "interval": "200ms", "failures": 2},
        },
    }})
}

#[test]
fn fleet_sim() {
    let n = env_u64("OUTPOST_FLEET_SIM_HOSTS", 20) as usize;
    let poll = Duration::from_millis(env_u64("OUTPOST_FLEET_SIM_POLL_MS", 1000));
    let idle_polls = env_u64("OUTPOST_FLEET_SIM_IDLE_POLLS", 3);
    let sim = Sim::start(n, poll);
    let bad = sim.hosts.iter().filter(|h| h.bad).count();
    println!("FLEETSIM {n} hosts, {bad} labelled role: canary-bad");

    let all_on = |stable: &str, generation| Expected {
        generation,
        packages: BTreeMap::from([((stable.to_owned(), String::new()), n as u64)]),
        rolled_back: 0,
    };
    sim.step(
        1,
        &json!({PACKAGE: {"stable": "1.0.0"}}),
        &all_on("1.0.0", 1),
    );
    let ten = sim.with_experiment(2, 10);
    assert!(
        ten.rolled_back >= 1,
        "a canary-bad host is in the 10 % cohort"
    );
    sim.step(2, &experiment(10), &ten);
    let fifty = sim.with_experiment(3, 50);
    // Raising the percent only adds hosts.
    for ((_, e), hosts) in &ten.packages {
        if e == "2.0.0" {
            assert!(fifty.packages[&("1.0.0".to_owned(), e.clone())] >= *hosts);
        }
    }
    sim.step(3, &experiment(50), &fifty);
    let mut last = all_on("2.0.0", 4);
    // Rollbacks are counted for the life of each daemon.
    last.rolled_back = fifty.rolled_back;
    sim.step(4, &json!({PACKAGE: {"stable": "2.0.0"}}), &last);
    sim.idle(idle_polls);
    // Every host's own view agrees with Prometheus's.
    for h in &sim.hosts {
        assert_eq!(
            h.daemon.versions(PACKAGE),
            Some(("2.0.0".into(), String::new())),
            "{}",
            h.id
        );
        let fleet = &h.daemon.status()["fleet"];
        assert_eq!(fleet["applied_generation"], 4, "{}: {fleet}", h.id);
        assert_eq!(fleet["converged"], true, "{}: {fleet}", h.id);
    }
}
