//! `outpost fleet report --prometheus URL [--selector MATCHERS] [--json]`: the state of a
//! fleet as the Prometheus server scraping its daemons sees it. Each figure is one instant
//! query of the server's HTTP API (`GET /api/v1/query`):
//!
//! | figure | query |
//! |---|---|
//! | hosts | `count(outpost_daemon_start_time_seconds)` |
//! | hosts per generation | `count_values("generation", outpost_fleet_generation)` |
//! | converged / not | `count(outpost_fleet_converged == 1)`, `... == 0` |
//! | hosts per package version | `count by (package, stable, experiment) (outpost_package_info)` |
//! | hosts that rolled back an experiment | `count by (package) (sum by (instance, package) (outpost_daemon_experiment_watches_total{outcome=~"health_check_failed\|experiment_expired"}) > 0)` |
//! | hosts with poll errors in the last 5 minutes | `count by (reason) (increase(outpost_fleet_poll_errors_total[5m]) > 0)` |
//!
//! `--selector` adds label matchers to every selector (`job="outpost"`). A host is a scrape
//! target (`instance`). Rollbacks are counted since each daemon started (the counter's
//! life). Exit 1 when the server cannot be reached or refuses a query.

use std::collections::BTreeMap;
use std::time::Duration;

use outpost_cli::ExitStatus;
use outpost_cli::args::{FleetReportArgs, GlobalArgs};
use serde::Serialize;
use serde_json::Value;

/// How long one query may take.
const QUERY_TIMEOUT: Duration = Duration::from_secs(30);

/// Hosts per generation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct GenerationCount {
    pub(crate) generation: u64,
    pub(crate) hosts: u64,
}

/// Hosts per package version pair.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct PackageCount {
    pub(crate) package: String,
    pub(crate) stable: String,
    /// Empty when no experiment runs.
    pub(crate) experiment: String,
    pub(crate) hosts: u64,
}

/// Hosts per package that rolled back an experiment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct RollbackCount {
    pub(crate) package: String,
    pub(crate) hosts: u64,
}

/// Hosts per poll error reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct ErrorCount {
    pub(crate) reason: String,
    pub(crate) hosts: u64,
}

/// What `outpost fleet report` prints (`--json`: this object).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct FleetReport {
    /// The server asked.
    pub(crate) prometheus: String,
    /// Daemons with series in the server.
    pub(crate) hosts: u64,
    /// Hosts per applied generation, lowest first.
    pub(crate) generations: Vec<GenerationCount>,
    /// Hosts in the applied document's state.
    pub(crate) converged: u64,
    /// Hosts not (yet) in it.
    pub(crate) not_converged: u64,
    /// Hosts per package and versions.
    pub(crate) packages: Vec<PackageCount>,
    /// Hosts per package whose experiment was rolled back (health check or deadline).
    pub(crate) rolled_back: Vec<RollbackCount>,
    /// Hosts per reason with a failed poll in the last 5 minutes.
    pub(crate) poll_errors: Vec<ErrorCount>,
}

/// Why the report could not be made.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReportError {
    #[error("invalid --prometheus URL {url:?}: {reason}")]
    Url { url: String, reason: String },
    #[error("cannot set up the HTTP client")]
    Client(#[source] reqwest::Error),
    #[error("cannot reach Prometheus at {url}")]
    Unreachable {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("Prometheus refused the query {query:?}: {detail}")]
    Refused { query: String, detail: String },
}

/// A client of one server's query API.
pub(crate) struct Prometheus {
    base: reqwest::Url,
    client: reqwest::Client,
    selector: Option<String>,
}

impl Prometheus {
    pub(crate) fn new(url: &str, selector: Option<String>) -> Result<Self, ReportError> {
        let bad = |reason: &str| ReportError::Url {
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        let mut base = reqwest::Url::parse(url).map_err(|e| bad(&e.to_string()))?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(bad("the scheme must be http or https"));
        }
        if base.query().is_some() || base.fragment().is_some() {
            return Err(bad("no query or fragment: the base URL of the server"));
        }
        // `http://host/prometheus` and `http://host/prometheus/` name the same base.
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        outpost_oci::transfer::ensure_provider();
        let client = reqwest::Client::builder()
            .timeout(QUERY_TIMEOUT)
            .user_agent(concat!("outpost/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(ReportError::Client)?;
        Ok(Self {
            base,
            client,
            selector: selector.filter(|s| !s.trim().is_empty()),
        })
    }

    /// `{matchers}` with the selector's matchers added.
    fn select(&self, matchers: &str) -> String {
        match (&self.selector, matchers.is_empty()) {
            (Some(s), true) => format!("{{{s}}}"),
            (Some(s), false) => format!("{{{matchers},{s}}}"),
            (None, true) => String::new(),
            (None, false) => format!("{{{matchers}}}"),
        }
    }

    /// The instant vector of `query`: each sample's labels and value.
    pub(crate) async fn query(
        &self,
        query: &str,
    ) -> Result<Vec<(BTreeMap<String, String>, f64)>, ReportError> {
        let mut url = self
            .base
            .join("api/v1/query")
            .map_err(|e| ReportError::Url {
                url: self.base.to_string(),
                reason: e.to_string(),
            })?;
        url.query_pairs_mut().append_pair("query", query);
        let refused = |detail: String| ReportError::Refused {
            query: query.to_owned(),
            detail,
        };
        let response =
            self.client
                .get(url)
                .send()
                .await
                .map_err(|source| ReportError::Unreachable {
                    url: self.base.to_string(),
                    source,
                })?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|source| ReportError::Unreachable {
                url: self.base.to_string(),
                source,
            })?;
        let json: Value = serde_json::from_slice(&body).map_err(|_| {
            refused(format!(
                "HTTP {status}, not the query API's JSON (is {} a Prometheus server?)",
                self.base
            ))
        })?;
        if json["status"] != "success" {
            return Err(refused(format!(
                "HTTP {status}: {}",
                json["error"].as_str().unwrap_or("no reason given")
            )));
        }
        let Some(result) = json["data"]["result"].as_array() else {
            return Err(refused("the answer is not an instant vector".into()));
        };
        result
            .iter()
            .map(|sample| {
                let labels = sample["metric"]
                    .as_object()
                    .map(|m| {
                        m.iter()
                            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                            .collect()
                    })
                    .unwrap_or_default();
                let value = sample["value"][1]
                    .as_str()
                    .and_then(|v| v.parse::<f64>().ok())
                    .ok_or_else(|| refused(format!("a sample without a value: {sample}")))?;
                Ok((labels, value))
            })
            .collect()
    }

    /// The value of a query that yields at most one sample (`count(...)`), 0 for none.
    async fn scalar(&self, query: &str) -> Result<u64, ReportError> {
        Ok(self
            .query(query)
            .await?
            .first()
            .map_or(0, |(_, v)| count(*v)))
    }

    /// Asks every figure of the report.
    pub(crate) async fn report(&self) -> Result<FleetReport, ReportError> {
        let hosts = self
            .scalar(&format!(
                "count(outpost_daemon_start_time_seconds{})",
                self.select("")
            ))
            .await?;
        let mut generations: Vec<GenerationCount> = self
            .query(&format!(
                "count_values(\"generation\", outpost_fleet_generation{})",
                self.select("")
            ))
            .await?
            .into_iter()
            .filter_map(|(l, v)| {
                Some(GenerationCount {
                    generation: l.get("generation")?.parse().ok()?,
                    hosts: count(v),
                })
            })
            .collect();
        generations.sort_by_key(|g| g.generation);
        let converged = self
            .scalar(&format!(
                "count(outpost_fleet_converged{} == 1)",
                self.select("")
            ))
            .await?;
        let not_converged = self
            .scalar(&format!(
                "count(outpost_fleet_converged{} == 0)",
                self.select("")
            ))
            .await?;
        let mut packages: Vec<PackageCount> = self
            .query(&format!(
                "count by (package, stable, experiment) (outpost_package_info{})",
                self.select("")
            ))
            .await?
            .into_iter()
            .map(|(mut l, v)| PackageCount {
                package: l.remove("package").unwrap_or_default(),
                stable: l.remove("stable").unwrap_or_default(),
                experiment: l.remove("experiment").unwrap_or_default(),
                hosts: count(v),
            })
            .collect();
        packages.sort_by(|a, b| {
            (&a.package, &a.stable, &a.experiment).cmp(&(&b.package, &b.stable, &b.experiment))
        });
        let mut rolled_back: Vec<RollbackCount> = self
            .query(&format!(
                "count by (package) (sum by (instance, package) \
                 (outpost_daemon_experiment_watches_total{}) > 0)",
                self.select("outcome=~\"health_check_failed|experiment_expired\"")
            ))
            .await?
            .into_iter()
            .map(|(mut l, v)| RollbackCount {
                package: l.remove("package").unwrap_or_default(),
                hosts: count(v),
            })
            .collect();
        rolled_back.sort_by(|a, b| a.package.cmp(&b.package));
        let mut poll_errors: Vec<ErrorCount> = self
            .query(&format!(
                "count by (reason) (increase(outpost_fleet_poll_errors_total{}[5m]) > 0)",
                self.select("")
            ))
            .await?
            .into_iter()
            .map(|(mut l, v)| ErrorCount {
                reason: l.remove("reason").unwrap_or_default(),
                hosts: count(v),
            })
            .collect();
        poll_errors.sort_by(|a, b| a.reason.cmp(&b.reason));
        Ok(FleetReport {
            prometheus: self.base.to_string(),
            hosts,
            generations,
            converged,
            not_converged,
            packages,
            rolled_back,
            poll_errors,
        })
    }
}

/// A count as Prometheus writes it (a float), as a whole number.
fn count(v: f64) -> u64 {
    if v.is_finite() && v > 0.0 {
        // Counts of hosts are whole and far below 2^53.
        v.round() as u64
    } else {
        0
    }
}

/// The report as a table.
pub(crate) fn render(report: &FleetReport) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let plural = |n: u64| if n == 1 { "host" } else { "hosts" };
    let _ = writeln!(
        out,
        "{} {} reporting to {}",
        report.hosts,
        plural(report.hosts),
        report.prometheus
    );
    if report.generations.is_empty() {
        out.push_str("generation: none applied\n");
    } else {
        let gens: Vec<String> = report
            .generations
            .iter()
            .map(|g| format!("{} ({} {})", g.generation, g.hosts, plural(g.hosts)))
            .collect();
        let _ = writeln!(out, "generation: {}", gens.join(", "));
        let _ = writeln!(
            out,
            "converged: {} of {}",
            report.converged,
            report.converged + report.not_converged
        );
    }
    out.push('\n');
    let mut rows = vec![[
        "PACKAGE".to_owned(),
        "STABLE".to_owned(),
        "EXPERIMENT".to_owned(),
        "HOSTS".to_owned(),
        "ROLLED BACK".to_owned(),
    ]];
    let rollbacks: BTreeMap<&str, u64> = report
        .rolled_back
        .iter()
        .map(|r| (r.package.as_str(), r.hosts))
        .collect();
    let mut shown = std::collections::BTreeSet::new();
    for p in &report.packages {
        // The rollbacks of a package are shown once, on its first row.
        let rolled = if shown.insert(p.package.as_str()) {
            rollbacks
                .get(p.package.as_str())
                .map_or("-".to_owned(), ToString::to_string)
        } else {
            String::new()
        };
        rows.push([
            p.package.clone(),
            p.stable.clone(),
            if p.experiment.is_empty() {
                "-".to_owned()
            } else {
                p.experiment.clone()
            },
            p.hosts.to_string(),
            rolled,
        ]);
    }
    for r in &report.rolled_back {
        if !shown.contains(r.package.as_str()) {
            rows.push([
                r.package.clone(),
                "-".into(),
                "-".into(),
                "0".into(),
                r.hosts.to_string(),
            ]);
        }
    }
    if rows.len() == 1 {
        out.push_str("no package installed on any host\n");
    } else {
        let mut widths = [0usize; 5];
        for row in &rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        for row in &rows {
            let mut line = String::new();
            for (i, (w, cell)) in widths.iter().zip(row).enumerate() {
                if i + 1 == row.len() {
                    line.push_str(cell);
                } else {
                    let _ = write!(line, "{cell:<w$}  ");
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
    }
    if !report.poll_errors.is_empty() {
        let errors: Vec<String> = report
            .poll_errors
            .iter()
            .map(|e| format!("{} ({} {})", e.reason, e.hosts, plural(e.hosts)))
            .collect();
        let _ = writeln!(out, "\npoll errors in the last 5m: {}", errors.join(", "));
    }
    out
}

/// Runs `outpost fleet report`.
pub(crate) fn run(global: &GlobalArgs, args: &FleetReportArgs) -> ExitStatus {
    let fail = |e: &ReportError| {
        let message = outpost_types::error_chain(e);
        eprintln!("error: {message}");
        if global.json {
            outpost_cli::output::print_error_json("local", &message);
        }
    };
    let prometheus = match Prometheus::new(&args.prometheus, args.selector.clone()) {
        Ok(p) => p,
        Err(e) => {
            fail(&e);
            return ExitStatus::Usage;
        }
    };
    let runtime = match outpost_cli::runtime::current_thread() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitStatus::Failure;
        }
    };
    match runtime.block_on(prometheus.report()) {
        Ok(report) => {
            if global.json {
                match serde_json::to_string_pretty(&report) {
                    Ok(text) => println!("{text}"),
                    Err(e) => {
                        eprintln!("error: cannot encode the report: {e}");
                        return ExitStatus::Failure;
                    }
                }
            } else {
                print!("{}", render(&report));
            }
            ExitStatus::Success
        }
        Err(e) => {
            fail(&e);
            ExitStatus::Failure
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> FleetReport {
        FleetReport {
            prometheus: "http://127.0.0.1:9090/".into(),
            hosts: 20,
            generations: vec![
                GenerationCount {
                    generation: 2,
                    hosts: 1,
                },
                GenerationCount {
                    generation: 3,
                    hosts: 19,
                },
            ],
            converged: 18,
            not_converged: 2,
            packages: vec![
                PackageCount {
                    package: "app".into(),
                    stable: "1.0.0".into(),
                    experiment: String::new(),
                    hosts: 12,
                },
                PackageCount {
                    package: "app".into(),
                    stable: "1.0.0".into(),
                    experiment: "2.0.0".into(),
                    hosts: 8,
                },
            ],
            rolled_back: vec![RollbackCount {
                package: "app".into(),
                hosts: 2,
            }],
            poll_errors: vec![ErrorCount {
                reason: "registry".into(),
                hosts: 1,
            }],
        }
    }

    #[test]
    fn the_table_shows_every_figure() {
        let text = render(&sample());
        assert_eq!(
            text,
            "20 hosts reporting to http://127.0.0.1:9090/\n\
             generation: 2 (1 host), 3 (19 hosts)\n\
             converged: 18 of 20\n\
             \n\
             PACKAGE  STABLE  EXPERIMENT  HOSTS  ROLLED BACK\n\
             app      1.0.0   -           12     2\n\
             app      1.0.0   2.0.0       8\n\
             \n\
             poll errors in the last 5m: registry (1 host)\n"
        );
    }

    #[test]
    fn selectors_are_added_to_every_matcher() {
        let p = Prometheus::new("http://127.0.0.1:9/x", Some("job=\"a\"".into())).unwrap();
        assert_eq!(p.base.as_str(), "http://127.0.0.1:9/x/");
        assert_eq!(p.select(""), "{job=\"a\"}");
        assert_eq!(p.select("outcome=\"b\""), "{outcome=\"b\",job=\"a\"}");
        let p = Prometheus::new("http://127.0.0.1:9", None).unwrap();
        assert_eq!(p.select(""), "");
        for bad in ["127.0.0.1:9090", "ftp://h/", "http://h/?q=1", "not a url"] {
            assert!(
                matches!(Prometheus::new(bad, None), Err(ReportError::Url { .. })),
                "{bad}"
            );
        }
    }
}
