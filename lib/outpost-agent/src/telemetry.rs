//! `GET /telemetry`: the API's own series, the agent's (scheduler, memory tracker, sinks)
//! and the latest values checks submitted, in one Prometheus text exposition.
//!
//! # The agent's series
//! * `rtloader__allocations`, `rtloader__frees`, `rtloader__allocated_bytes`,
//!   `rtloader__freed_bytes`, `rtloader__untracked_frees` (counters) and
//!   `rtloader__inuse_bytes` (gauge): the memory tracker, one series without labels for the
//!   whole interpreter and one per check instance with the label `check_id` (instances
//!   unscheduled since keep theirs while blocks they allocated are alive). Summing a family
//!   must leave the unlabelled series out. With tracking off the totals are 0.
//! * `outpost_agent_runners`, `outpost_agent_runners_busy`, `outpost_agent_runners_abandoned`,
//!   `outpost_agent_runs_queued`, `outpost_agent_check_instances` (gauges);
//!   `outpost_agent_check_instances_disabled` (gauge), and
//!   `outpost_agent_check_disabled{check_name,check_id,reason}` (gauge, 1 per instance a run
//!   over the check memory limit disabled; gone once it is enabled or removed);
//!   `outpost_agent_runs_abandoned_total`, `outpost_agent_runs_total`,
//!   `outpost_agent_run_errors_total`, `outpost_agent_run_overruns_total`,
//!   `outpost_agent_runs_late_total`, `outpost_agent_check_cpu_seconds_total` (counters);
//!   `outpost_agent_run_start_delay_seconds` (histogram of how long after their due time
//!   scheduled runs started; no `_sum`).
//! * `outpost_agent_python_available` (gauge 0/1), `outpost_agent_load_errors` (gauge),
//!   `outpost_agent_reloads_total`, `outpost_agent_dropped_submissions_total{reason}`,
//!   `outpost_agent_output_errors_total` (counters).
//! * `outpost_agent_check_runs_total`, `outpost_agent_check_run_errors_total` (counters) and
//!   `outpost_agent_check_run_duration_seconds` (histogram), each with the labels
//!   `check_name` and `check_id` ([`crate::sinks::RunMetrics`]).
//! * `datadog_agent_check_ready{status,check_name,agent_version_major,...}`: 1 for a ready
//!   custom check, else 0 (set by the validation of each custom check).

use outpost_api::Telemetry;
use outpost_checks::memtrack::{self, MemoryStats};

use crate::agent::Agent;
use crate::sinks::exposition::{Exposition, labels};

type Field = fn(&MemoryStats) -> u64;

/// The memory families: name, type, help, value.
const MEMORY_FAMILIES: [(&str, &str, &str, Field); 5] = [
    (
        "rtloader__allocations",
        "counter",
        "Python allocations tracked (with check_id: made while that instance ran)",
        |s| s.allocations,
    ),
    (
        "rtloader__frees",
        "counter",
        "Frees of tracked Python allocations",
        |s| s.frees,
    ),
    (
        "rtloader__allocated_bytes",
        "counter",
        "Bytes of tracked Python allocations",
        |s| s.allocated_bytes,
    ),
    (
        "rtloader__freed_bytes",
        "counter",
        "Bytes of tracked Python allocations freed",
        |s| s.freed_bytes,
    ),
    (
        "rtloader__inuse_bytes",
        "gauge",
        "Bytes of tracked Python allocations still in use",
        |s| s.inuse_bytes,
    ),
];

#[allow(clippy::cast_precision_loss)] // counters far below 2^53
fn f(v: u64) -> f64 {
    v as f64
}

fn render_memory(out: &mut Exposition) {
    let snap = memtrack::snapshot();
    let checks: Vec<(String, MemoryStats)> = snap
        .checks
        .iter()
        .map(|c| (labels(&[("check_id", &c.check_id)]), c.stats))
        .collect();
    for (name, kind, help, field) in MEMORY_FAMILIES {
        if !out.family(name, kind, help) {
            continue;
        }
        out.sample(name, "", "", None, f(field(&snap.total)));
        for (labels, stats) in &checks {
            out.sample(name, "", labels, None, f(field(stats)));
        }
    }
    if out.family(
        "rtloader__untracked_frees",
        "counter",
        "Frees of pointers the tracker never saw allocated",
    ) {
        out.sample(
            "rtloader__untracked_frees",
            "",
            "",
            None,
            f(snap.untracked_frees),
        );
    }
}

fn gauge(out: &mut Exposition, name: &str, help: &str, value: f64) {
    if out.family(name, "gauge", help) {
        out.sample(name, "", "", None, value);
    }
}

fn counter(out: &mut Exposition, name: &str, help: &str, value: f64) {
    if out.family(name, "counter", help) {
        out.sample(name, "", "", None, value);
    }
}

fn render_agent(agent: &Agent, out: &mut Exposition) {
    let s = agent.scheduler_stats();
    gauge(
        out,
        "outpost_agent_runners",
        "Runner threads",
        f(s.runners as u64),
    );
    gauge(
        out,
        "outpost_agent_runners_busy",
        "Runners busy with a run (a run past its timeout is abandoned and gives its runner back)",
        f(s.busy as u64),
    );
    gauge(
        out,
        "outpost_agent_runners_abandoned",
        "Threads of runs abandoned past their timeout and still going",
        f(s.abandoned as u64),
    );
    counter(
        out,
        "outpost_agent_runs_abandoned_total",
        "Runs abandoned past their timeout",
        f(s.abandoned_total),
    );
    gauge(
        out,
        "outpost_agent_runs_queued",
        "Check instances due and waiting for a runner",
        f(s.queued as u64),
    );
    gauge(
        out,
        "outpost_agent_check_instances",
        "Check instances scheduled",
        f(s.jobs as u64),
    );
    gauge(
        out,
        "outpost_agent_check_instances_disabled",
        "Check instances disabled (a run over agent.check_memory_limit); no longer scheduled",
        f(s.disabled as u64),
    );
    let name = "outpost_agent_check_disabled";
    if out.family(
        name,
        "gauge",
        "1 per disabled check instance, with why (reason)",
    ) {
        for (check, id, reason) in agent.disabled_instances() {
            out.sample(
                name,
                "",
                &labels(&[
                    ("check_name", check.as_str()),
                    ("check_id", id.as_str()),
                    ("reason", reason),
                ]),
                None,
                1.0,
            );
        }
    }
    counter(
        out,
        "outpost_agent_runs_total",
        "Check runs finished",
        f(s.runs),
    );
    counter(
        out,
        "outpost_agent_run_errors_total",
        "Check runs that reported an error",
        f(s.errors),
    );
    counter(
        out,
        "outpost_agent_run_overruns_total",
        "Check runs that took longer than their interval",
        f(s.overruns),
    );
    counter(
        out,
        "outpost_agent_runs_late_total",
        "Check runs still going after their timeout (cancel requested)",
        f(s.late),
    );
    counter(
        out,
        "outpost_agent_check_cpu_seconds_total",
        "CPU time of the runner threads inside check runs",
        s.run_cpu.as_secs_f64(),
    );
    let name = "outpost_agent_run_start_delay_seconds";
    if out.family(
        name,
        "histogram",
        "How long after their due time scheduled runs started",
    ) {
        let mut cumulative = 0;
        for (bound, count) in s.start_delay.bounds_ms.iter().zip(&s.start_delay.counts) {
            cumulative += count;
            out.sample(name, "_bucket", "", Some(f(*bound) / 1000.0), f(cumulative));
        }
        let total = s.start_delay.total();
        out.sample(name, "_bucket", "", Some(f64::INFINITY), f(total));
        out.sample(name, "_count", "", None, f(total));
    }
    let python = agent.python_status();
    gauge(
        out,
        "outpost_agent_python_available",
        "1 when the embedded Python runs checks",
        if python.available { 1.0 } else { 0.0 },
    );
    let view_errors = agent.load_errors().len() as u64;
    gauge(
        out,
        "outpost_agent_load_errors",
        "Configurations, checks and instances that failed to load at the last reload",
        f(view_errors),
    );
    counter(
        out,
        "outpost_agent_reloads_total",
        "Configuration reloads",
        f(agent.reloads()),
    );
    let name = "outpost_agent_dropped_submissions_total";
    if out.family(
        name,
        "counter",
        "Check submissions left out of this endpoint, by reason",
    ) {
        for (reason, n) in agent.series().dropped() {
            out.sample(
                name,
                "",
                &labels(&[("reason", reason.as_str())]),
                None,
                f(n),
            );
        }
    }
    if let Some(output) = agent.output() {
        counter(
            out,
            "outpost_agent_output_errors_total",
            "Runs whose submissions could not be written to --output",
            f(output.errors()),
        );
    }
}

/// Renders the whole exposition: `api`'s registry, the agent's series, then the checks'.
pub fn render(agent: &Agent, api: &Telemetry) -> String {
    let mut out =
        Exposition::with_capacity(64 * (api.series_count() + agent.series().series_count()) + 8192);
    out.append_telemetry(api);
    render_memory(&mut out);
    render_agent(agent, &mut out);
    agent.series().runs().render(&mut out);
    agent.series().render(&mut out);
    out.finish()
}
