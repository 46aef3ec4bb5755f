//! The scheduler's timing rules on tokio's paused clock, with Rust jobs: intervals, spreading,
//! no overlap, overruns, timeouts, run-now, reload (add/remove/replace) and shutdown.
//!
//! Runs execute on real blocking threads. While one is in progress the paused clock does not
//! move by itself (tokio inhibits auto-advance for blocking tasks on a current-thread
//! runtime), so a test either lets the clock jump from timer to timer with `sleep` when no
//! run blocks, or moves it with `advance` while a gated run holds a runner. `until` waits
//! (yielding, with a real-time deadline) for what the runner threads do.

#![allow(clippy::unwrap_used)] // tests may unwrap

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use outpost_agent::AgentError;
use outpost_agent::scheduler::{
    Job, JobError, JobReport, Observer, RunInfo, RunKind, RunSummary, Scheduler, SchedulerConfig,
    spread_offset,
};
use tokio::time::Instant;

/// Permits for runs of a gated job: each run takes one, waiting until there is one.
#[derive(Default)]
struct Gate {
    permits: Mutex<usize>,
    changed: Condvar,
}

impl Gate {
    fn release(&self, n: usize) {
        let mut p = self.permits.lock().unwrap();
        *p = p.saturating_add(n);
        self.changed.notify_all();
    }

    fn open(&self) {
        self.release(usize::MAX);
    }

    fn pass(&self) {
        let mut p = self.permits.lock().unwrap();
        while *p == 0 {
            p = self.changed.wait(p).unwrap();
        }
        if *p != usize::MAX {
            *p -= 1;
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Returns at once.
    Quick,
    /// Waits for a gate permit; `cancel` does not help.
    Gated,
    /// Waits for a gate permit; `cancel` opens the gate.
    GatedCancellable,
    /// Panics.
    Panics,
}

struct TestJob {
    id: String,
    interval: Duration,
    timeout: Option<Duration>,
    mode: Mode,
    gate: Gate,
    starts: Mutex<Vec<Instant>>,
    finished: AtomicUsize,
    in_run: AtomicUsize,
    max_in_run: AtomicUsize,
    cancels: AtomicUsize,
}

impl TestJob {
    fn new(id: &str, interval_s: u64, mode: Mode) -> Arc<Self> {
        Self::with_timeout(id, interval_s, mode, None)
    }

    fn with_timeout(id: &str, interval_s: u64, mode: Mode, timeout_s: Option<u64>) -> Arc<Self> {
        Arc::new(Self {
            id: id.to_owned(),
            interval: Duration::from_secs(interval_s),
            timeout: timeout_s.map(Duration::from_secs),
            mode,
            gate: Gate::default(),
            starts: Mutex::new(Vec::new()),
            finished: AtomicUsize::new(0),
            in_run: AtomicUsize::new(0),
            max_in_run: AtomicUsize::new(0),
            cancels: AtomicUsize::new(0),
        })
    }

    fn starts(&self) -> Vec<Instant> {
        self.starts.lock().unwrap().clone()
    }

    fn runs(&self) -> usize {
        self.finished.load(Ordering::SeqCst)
    }

    fn started(&self) -> usize {
        self.starts.lock().unwrap().len()
    }

    fn cancels(&self) -> usize {
        self.cancels.load(Ordering::SeqCst)
    }
}

#[derive(Debug)]
struct TestReport {
    run: usize,
}

impl JobReport for TestReport {
    fn summary(&self) -> RunSummary {
        RunSummary {
            metric_count: self.run,
            ..RunSummary::default()
        }
    }
}

impl Job for TestJob {
    type Report = TestReport;

    fn id(&self) -> &str {
        &self.id
    }

    fn interval(&self) -> Duration {
        self.interval
    }

    fn timeout(&self) -> Option<Duration> {
        self.timeout
    }

    fn run(&self) -> TestReport {
        self.starts.lock().unwrap().push(Instant::now());
        let now = self.in_run.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_in_run.fetch_max(now, Ordering::SeqCst);
        match self.mode {
            Mode::Quick => {}
            Mode::Gated | Mode::GatedCancellable => self.gate.pass(),
            Mode::Panics => {
                self.in_run.fetch_sub(1, Ordering::SeqCst);
                self.finished.fetch_add(1, Ordering::SeqCst);
                panic!("job {} exploded", self.id);
            }
        }
        self.in_run.fetch_sub(1, Ordering::SeqCst);
        let run = self.finished.fetch_add(1, Ordering::SeqCst) + 1;
        TestReport { run }
    }

    fn cancel(&self) {
        self.cancels.fetch_add(1, Ordering::SeqCst);
        if self.mode == Mode::GatedCancellable {
            self.gate.open();
        }
    }
}

/// What the observer saw, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seen {
    Completed {
        id: String,
        kind: RunKind,
        run: usize,
    },
    Retired(String),
}

#[derive(Default)]
struct Recorder {
    seen: Mutex<Vec<Seen>>,
}

impl Recorder {
    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn retired(&self) -> Vec<String> {
        self.seen()
            .into_iter()
            .filter_map(|s| match s {
                Seen::Retired(id) => Some(id),
                Seen::Completed { .. } => None,
            })
            .collect()
    }
}

impl Observer<TestJob> for Recorder {
    fn completed(&self, job: &Arc<TestJob>, report: &TestReport, run: &RunInfo) {
        self.seen.lock().unwrap().push(Seen::Completed {
            id: job.id.clone(),
            kind: run.kind,
            run: report.run,
        });
    }

    fn retired(&self, job: &Arc<TestJob>) {
        self.seen
            .lock()
            .unwrap()
            .push(Seen::Retired(job.id.clone()));
    }
}

/// Opens the gates of its jobs when dropped, so that a failing test does not leave runs
/// blocked (the runtime waits for them when it shuts down).
struct OpenOnDrop(Vec<Arc<TestJob>>);

impl Drop for OpenOnDrop {
    fn drop(&mut self) {
        for j in &self.0 {
            j.gate.open();
        }
    }
}

fn start(runners: usize, spread: bool) -> (Scheduler<TestJob>, Arc<Recorder>) {
    let recorder = Arc::new(Recorder::default());
    let scheduler = Scheduler::start(
        SchedulerConfig {
            runners,
            timeout: None,
            spread,
            // The loop must run on the test's runtime, whose clock is paused.
            dedicated_thread: false,
        },
        recorder.clone(),
    )
    .unwrap();
    (scheduler, recorder)
}

/// Waits until `cond` holds, letting the scheduler task run; fails after 10 s of real time.
async fn until(what: &str, cond: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::task::yield_now().await;
    }
}

/// Runs of `id` the scheduling loop has seen finish (a job's own counters move first, on its
/// runner thread, before the loop hears of it).
fn finished(scheduler: &Scheduler<TestJob>, id: &str) -> u64 {
    scheduler.job(id).map_or(0, |j| j.runs)
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// Offsets of `times` from `t0`, in milliseconds.
fn offsets_ms(t0: Instant, times: &[Instant]) -> Vec<u128> {
    times.iter().map(|t| (*t - t0).as_millis()).collect()
}

#[tokio::test(start_paused = true)]
async fn runs_every_interval_at_its_due_time() {
    let (scheduler, recorder) = start(1, false);
    let t0 = Instant::now();
    let job = TestJob::new("every:1", 10, Mode::Quick);
    scheduler.add(job.clone()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(45_500)).await;
    assert_eq!(
        offsets_ms(t0, &job.starts()),
        [0, 10_000, 20_000, 30_000, 40_000]
    );
    let stats = scheduler.job("every:1").unwrap();
    assert_eq!(stats.runs, 5);
    assert_eq!(stats.overruns + stats.late + stats.errors, 0);
    let last = stats.last_run.unwrap();
    assert_eq!(last.kind, RunKind::Scheduled);
    assert_eq!(last.start_delay, Duration::ZERO);
    assert_eq!(last.summary.metric_count, 5, "the summary of the fifth run");
    assert_eq!(
        stats.next_run_in,
        Some(Duration::from_millis(4_500)),
        "due at 50 s"
    );
    let totals = scheduler.stats();
    assert_eq!(totals.start_delay.total(), 5);
    assert_eq!(totals.start_delay.at_most(1), 5);
    assert_eq!(recorder.seen().len(), 5);
}

#[tokio::test(start_paused = true)]
async fn first_runs_spread_over_the_interval_deterministically() {
    let interval = secs(60);
    let ids: Vec<String> = (0..24).map(|i| format!("spread:{i:016x}")).collect();
    let mut first_starts = Vec::new();
    for round in 0..2 {
        let (scheduler, _) = start(4, true);
        let t0 = Instant::now();
        let jobs: Vec<_> = ids
            .iter()
            .map(|id| TestJob::new(id, 60, Mode::Quick))
            .collect();
        for j in &jobs {
            scheduler.add(j.clone()).await.unwrap();
        }
        tokio::time::sleep(interval - Duration::from_millis(1)).await;
        let offsets: Vec<Duration> = jobs
            .iter()
            .map(|j| {
                let starts = j.starts();
                assert_eq!(starts.len(), 1, "{}: one run in the first interval", j.id);
                starts[0] - t0
            })
            .collect();
        for (j, offset) in jobs.iter().zip(&offsets) {
            let expected = spread_offset(&j.id, interval);
            // Timers fire on whole milliseconds.
            assert!(
                *offset >= expected && *offset <= expected + Duration::from_millis(1),
                "{}: started {offset:?} after adding, its offset is {expected:?}",
                j.id
            );
        }
        let mut distinct = offsets.clone();
        distinct.sort();
        distinct.dedup();
        assert!(distinct.len() >= 22, "starts spread out: {offsets:?}");
        let first_half = offsets.iter().filter(|o| **o < interval / 2).count();
        assert!((4..=20).contains(&first_half), "{offsets:?}");
        first_starts.push(offsets);
        scheduler.shutdown(secs(1)).await.unwrap();
        let _ = round;
    }
    assert_eq!(first_starts[0], first_starts[1], "same IDs, same offsets");
}

#[tokio::test(start_paused = true)]
async fn an_overrun_delays_the_next_run_and_a_job_never_overlaps_itself() {
    let (scheduler, _) = start(2, false);
    let t0 = Instant::now();
    // Timeout above the run time: this run is only an overrun, not late.
    let job = TestJob::with_timeout("slow:1", 10, Mode::Gated, Some(30));
    let _open = OpenOnDrop(vec![job.clone()]);
    scheduler.add(job.clone()).await.unwrap();
    until("the first run starts", || job.started() == 1).await;
    // The run takes 15 s: past its next due time (10 s), which does not start a second run.
    tokio::time::advance(secs(15)).await;
    assert_eq!(job.started(), 1, "no second run while the first one runs");
    job.gate.release(1);
    // Finished at 15 s: the next run starts right away (delayed from 10 s to 15 s).
    until("the delayed run starts", || job.started() == 2).await;
    let stats = scheduler.job("slow:1").unwrap();
    assert_eq!(stats.overruns, 1);
    assert_eq!(stats.late, 0);
    let last = stats.last_run.unwrap();
    assert!(last.overrun && !last.late);
    assert_eq!(last.duration, secs(15));
    job.gate.release(1);
    until("the delayed run ends", || {
        finished(&scheduler, "slow:1") == 2
    })
    .await;
    // From there the schedule continues every 10 s: 25, 35.
    job.gate.open();
    tokio::time::sleep(Duration::from_millis(36_500 - 15_000)).await;
    assert_eq!(offsets_ms(t0, &job.starts()), [0, 15_000, 25_000, 35_000]);
    assert_eq!(job.max_in_run.load(Ordering::SeqCst), 1);
    let stats = scheduler.job("slow:1").unwrap();
    assert_eq!((stats.runs, stats.overruns), (4, 1));
    assert_eq!(scheduler.stats().overruns, 1);
}

#[tokio::test(start_paused = true)]
async fn a_hung_run_is_late_gets_cancel_and_gives_its_runner_back() {
    let (scheduler, _) = start(2, false);
    let t0 = Instant::now();
    let hung = TestJob::new("hung:1", 5, Mode::Gated);
    let _open = OpenOnDrop(vec![hung.clone()]);
    let busy = TestJob::new("busy:1", 1, Mode::Quick);
    scheduler.add(hung.clone()).await.unwrap();
    scheduler.add(busy.clone()).await.unwrap();
    until("both start", || {
        hung.started() == 1 && finished(&scheduler, "busy:1") == 1
    })
    .await;
    for second in 1..=12 {
        tokio::time::advance(secs(1)).await;
        until("the busy job runs each second", || {
            finished(&scheduler, "busy:1") == second + 1
        })
        .await;
        if second >= 5 {
            until("cancel is requested", || hung.cancels() == 1).await;
        } else {
            assert_eq!(hung.cancels(), 0, "not late before its timeout (5 s)");
        }
    }
    let starts = offsets_ms(t0, &busy.starts());
    assert_eq!(starts, (0..=12).map(|s| s * 1000).collect::<Vec<u128>>());
    let stats = scheduler.job("hung:1").unwrap();
    assert!(stats.running);
    assert_eq!(stats.late, 1, "reported late once");
    assert_eq!(stats.running_for, Some(secs(12)));
    let totals = scheduler.stats();
    assert_eq!(
        (totals.busy, totals.abandoned, totals.late),
        (0, 1, 1),
        "the late run gave its runner back and keeps its thread"
    );
    assert_eq!(hung.cancels(), 1, "cancel requested once per late run");
    // When it finally returns it is an overrun too, and runs again at once.
    hung.gate.release(2);
    until("the hung job runs again", || {
        finished(&scheduler, "hung:1") == 2
    })
    .await;
    let stats = scheduler.job("hung:1").unwrap();
    assert_eq!((stats.runs, stats.late, stats.overruns), (2, 1, 1));
    assert_eq!(offsets_ms(t0, &hung.starts()), [0, 12_000]);
    let totals = scheduler.stats();
    assert_eq!((totals.abandoned, totals.abandoned_total), (0, 1));
}

/// Threads of this process named `check-run` (the runner pool's), when the test runs in a
/// process of its own (nextest); `None` otherwise, where other tests' pools would count.
fn runner_threads() -> Option<usize> {
    std::env::var_os("NEXTEST")?;
    let tasks = fs_err::read_dir("/proc/self/task").unwrap();
    Some(
        tasks
            .filter_map(|t| fs_err::read_to_string(t.unwrap().path().join("comm")).ok())
            .filter(|name| name.trim_end() == "check-run")
            .count(),
    )
}

#[tokio::test(start_paused = true)]
async fn a_late_run_is_abandoned_and_a_new_runner_takes_its_place() {
    let (scheduler, _) = start(1, false);
    let t0 = Instant::now();
    let hung = TestJob::new("hung:1", 5, Mode::Gated);
    let _open = OpenOnDrop(vec![hung.clone()]);
    let quick = TestJob::new("quick:1", 1, Mode::Quick);
    scheduler.add(hung.clone()).await.unwrap();
    scheduler.add(quick.clone()).await.unwrap();
    until("the hung job holds the only runner", || {
        hung.started() == 1 && scheduler.stats().queued == 1
    })
    .await;
    assert_eq!(runner_threads().unwrap_or(1), 1, "a pool of one thread");
    tokio::time::advance(secs(4)).await;
    assert_eq!(quick.started(), 0, "no runner before the timeout");
    tokio::time::advance(secs(1)).await;
    until("the replacement runner serves the queued job", || {
        finished(&scheduler, "quick:1") == 1
    })
    .await;
    let totals = scheduler.stats();
    assert_eq!(
        (totals.runners, totals.abandoned, totals.abandoned_total),
        (1, 1, 1)
    );
    assert_eq!(
        runner_threads().unwrap_or(2),
        2,
        "the pool plus the abandoned run"
    );
    for second in 1..=3 {
        tokio::time::advance(secs(1)).await;
        until("the quick job runs each second", || {
            finished(&scheduler, "quick:1") == second + 1
        })
        .await;
    }
    assert_eq!(
        offsets_ms(t0, &quick.starts()),
        [5_000, 6_000, 7_000, 8_000]
    );
    assert_eq!(
        hung.started(),
        1,
        "an abandoned run still forbids a second one"
    );
    // The abandoned run returns: its thread ends, the pool is back to one thread, and the
    // job runs again (it is due: the run overran its interval).
    hung.gate.release(1);
    until("the hung job's second run starts", || hung.started() == 2).await;
    until("the abandoned thread ends", || {
        scheduler.stats().abandoned == 0 && runner_threads().unwrap_or(1) == 1
    })
    .await;
    let stats = scheduler.job("hung:1").unwrap();
    assert_eq!((stats.runs, stats.late), (1, 1));
    hung.gate.release(1);
    until("its second run ends", || {
        finished(&scheduler, "hung:1") == 2
    })
    .await;
    assert_eq!(scheduler.stats().abandoned_total, 1);
    assert_eq!(runner_threads().unwrap_or(1), 1);
}

#[tokio::test(start_paused = true)]
async fn the_pool_keeps_its_size_over_many_runs() {
    let (scheduler, _) = start(3, false);
    let jobs: Vec<_> = (0..20)
        .map(|i| TestJob::new(&format!("quick:{i}"), 1, Mode::Quick))
        .collect();
    for j in &jobs {
        scheduler.add(j.clone()).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(50_500)).await;
    let totals = scheduler.stats();
    assert_eq!(totals.runs, 20 * 51);
    assert_eq!((totals.abandoned_total, totals.late), (0, 0));
    assert_eq!(runner_threads().unwrap_or(3), 3, "no thread added or lost");
}

#[tokio::test(start_paused = true)]
async fn hung_runs_use_up_runners_one_each() {
    let (scheduler, _) = start(2, false);
    let t0 = Instant::now();
    let a = TestJob::new("hung:a", 5, Mode::Gated);
    let b = TestJob::new("hung:b", 5, Mode::Gated);
    let _open = OpenOnDrop(vec![a.clone(), b.clone()]);
    let quick = TestJob::new("quick:1", 1, Mode::Quick);
    for j in [&a, &b, &quick] {
        scheduler.add((*j).clone()).await.unwrap();
    }
    until("the hung jobs hold both runners", || {
        a.started() == 1 && b.started() == 1 && scheduler.stats().queued == 1
    })
    .await;
    tokio::time::advance(secs(3)).await;
    assert_eq!(quick.started(), 0, "no runner left for it");
    assert_eq!(scheduler.stats().busy, 2);
    a.gate.release(1);
    until("a freed runner serves the queued job", || {
        finished(&scheduler, "quick:1") == 1
    })
    .await;
    let delay = scheduler
        .job("quick:1")
        .unwrap()
        .last_run
        .unwrap()
        .start_delay;
    assert_eq!(delay, secs(3), "it waited for a runner");
    // The missed slots (1 s, 2 s) are skipped: next run 1 s after this start.
    tokio::time::advance(secs(1)).await;
    until("the next run", || finished(&scheduler, "quick:1") == 2).await;
    assert_eq!(offsets_ms(t0, &quick.starts()), [3_000, 4_000]);
}

#[tokio::test(start_paused = true)]
async fn run_now_is_a_fresh_run_that_leaves_the_schedule_alone() {
    let (scheduler, recorder) = start(1, false);
    let t0 = Instant::now();
    let job = TestJob::new("manual:1", 10, Mode::Quick);
    scheduler.add(job.clone()).await.unwrap();
    tokio::time::sleep(secs(3)).await;
    let manual = scheduler.run_now("manual:1").await.unwrap();
    assert_eq!(manual.report.run, 2);
    assert_eq!(manual.info.kind, RunKind::Manual);
    assert_eq!(manual.info.started - t0, secs(3));
    tokio::time::sleep(Duration::from_millis(7_500)).await;
    assert_eq!(offsets_ms(t0, &job.starts()), [0, 3_000, 10_000]);
    assert!(recorder.seen().contains(&Seen::Completed {
        id: "manual:1".into(),
        kind: RunKind::Manual,
        run: 2
    }));
    let stats = scheduler.job("manual:1").unwrap();
    assert_eq!((stats.runs, stats.manual_runs), (3, 1));
    let err = scheduler.run_now("nope:1").await.unwrap_err();
    assert!(matches!(err, AgentError::UnknownJob { .. }), "{err}");
}

#[tokio::test(start_paused = true)]
async fn run_now_waits_for_a_run_that_starts_after_the_request() {
    let (scheduler, _) = start(2, false);
    let job = TestJob::with_timeout("gated:1", 60, Mode::Gated, Some(600));
    let _open = OpenOnDrop(vec![job.clone()]);
    scheduler.add(job.clone()).await.unwrap();
    until("the scheduled run starts", || job.started() == 1).await;
    let waiter = {
        let s = scheduler.clone();
        tokio::spawn(async move { s.run_now("gated:1").await })
    };
    tokio::time::advance(secs(2)).await;
    job.gate.release(1);
    until("a second run starts after the first", || job.started() == 2).await;
    assert_eq!(job.max_in_run.load(Ordering::SeqCst), 1);
    job.gate.release(1);
    let manual = waiter.await.unwrap().unwrap();
    assert_eq!(
        manual.report.run, 2,
        "not the run in progress at the request"
    );
    assert_eq!(manual.info.kind, RunKind::Manual);
}

#[tokio::test(start_paused = true)]
async fn reload_adds_removes_and_replaces_jobs() {
    let (scheduler, recorder) = start(2, false);
    let a = TestJob::new("a:1", 10, Mode::Quick);
    let b = TestJob::new("b:1", 10, Mode::Quick);
    scheduler.add(a.clone()).await.unwrap();
    scheduler.add(b.clone()).await.unwrap();
    let dup = scheduler.add(TestJob::new("a:1", 10, Mode::Quick)).await;
    assert!(
        matches!(dup, Err(AgentError::DuplicateJob { .. })),
        "{dup:?}"
    );
    tokio::time::sleep(secs(5)).await;

    // Removed while idle: cancelled, retired at once, never runs again.
    assert!(scheduler.remove("b:1").await.unwrap());
    until("b is cancelled", || b.cancels() == 1).await;
    assert_eq!(recorder.retired(), ["b:1"]);
    assert!(!scheduler.remove("b:1").await.unwrap(), "already gone");
    assert!(scheduler.job("b:1").is_none());

    // Added: runs (spreading off: at once).
    let c = TestJob::new("c:1", 10, Mode::Quick);
    scheduler.add(c.clone()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(10_500)).await;
    assert_eq!(b.runs(), 1);
    assert_eq!((a.runs(), c.runs()), (2, 2));

    // Changed: the old instance (a gated run in progress) is removed and a new one added.
    let old = TestJob::new("d:1", 10, Mode::Gated);
    let _open = OpenOnDrop(vec![old.clone()]);
    scheduler.add(old.clone()).await.unwrap();
    until("d:1 runs", || old.started() == 1).await;
    assert!(scheduler.remove("d:1").await.unwrap());
    until("its cancel is requested", || old.cancels() == 1).await;
    assert!(
        !recorder.retired().contains(&"d:1".to_string()),
        "still running"
    );
    let new = TestJob::new("d:2", 10, Mode::Quick);
    scheduler.add(new.clone()).await.unwrap();
    // Re-adding the removed ID while it still runs: it is scheduled once the old one retires.
    let again = TestJob::new("d:1", 10, Mode::Quick);
    scheduler.add(again.clone()).await.unwrap();
    until("the new instance runs", || finished(&scheduler, "d:2") == 1).await;
    assert_eq!(again.started(), 0);
    old.gate.release(1);
    until("the old one retires and its successor runs", || {
        again.runs() == 1 && recorder.retired().contains(&"d:1".to_string())
    })
    .await;
    let seen = recorder.seen();
    let completed_old = seen
        .iter()
        .position(|s| matches!(s, Seen::Completed { id, .. } if id == "d:1"))
        .unwrap();
    let retired_old = seen
        .iter()
        .position(|s| *s == Seen::Retired("d:1".into()))
        .unwrap();
    assert!(
        completed_old < retired_old,
        "the last run is committed first"
    );
    assert_eq!(old.runs(), 1, "the old instance never ran again");
    assert_eq!(scheduler.stats().jobs, 4, "a, c, d:2 and the new d:1");
}

#[tokio::test(start_paused = true)]
async fn shutdown_cancels_every_job_and_waits_with_a_bound() {
    let (scheduler, _) = start(3, false);
    let polite = TestJob::new("polite:1", 100, Mode::GatedCancellable);
    let stubborn = TestJob::new("stubborn:1", 100, Mode::Gated);
    let _open = OpenOnDrop(vec![polite.clone(), stubborn.clone()]);
    let idle = TestJob::new("idle:1", 100, Mode::Quick);
    for j in [&polite, &stubborn, &idle] {
        scheduler.add((*j).clone()).await.unwrap();
    }
    until("everything started", || {
        polite.started() == 1 && stubborn.started() == 1 && finished(&scheduler, "idle:1") == 1
    })
    .await;
    let shutdown = {
        let s = scheduler.clone();
        tokio::spawn(async move { s.shutdown(secs(5)).await })
    };
    until("every job is asked to cancel", || {
        polite.cancels() == 1 && stubborn.cancels() == 1 && idle.cancels() == 1
    })
    .await;
    until("the polite run ends", || {
        finished(&scheduler, "polite:1") == 1
    })
    .await;
    assert!(!shutdown.is_finished(), "waits for the stubborn run");
    let refused = scheduler.add(TestJob::new("late:1", 1, Mode::Quick)).await;
    assert!(
        matches!(refused, Err(AgentError::ShuttingDown)),
        "{refused:?}"
    );
    let refused = scheduler.run_now("idle:1").await;
    assert!(
        matches!(refused, Err(AgentError::ShuttingDown)),
        "{refused:?}"
    );
    tokio::time::advance(secs(5)).await;
    let report = shutdown.await.unwrap().unwrap();
    assert_eq!(report.cancelled, 3);
    assert_eq!(report.unfinished, ["stubborn:1"]);
    // The loop is gone: nothing runs again, handles report it.
    stubborn.gate.open();
    tokio::time::sleep(secs(300)).await;
    assert_eq!((polite.started(), idle.started()), (1, 1));
    assert!(matches!(
        scheduler.run_now("idle:1").await,
        Err(AgentError::SchedulerStopped)
    ));
}

#[tokio::test(start_paused = true)]
async fn a_panicking_run_is_an_error_and_the_job_stays_scheduled() {
    let (scheduler, recorder) = start(1, false);
    let job = TestJob::new("panics:1", 10, Mode::Panics);
    let other = TestJob::new("fine:1", 10, Mode::Quick);
    scheduler.add(job.clone()).await.unwrap();
    scheduler.add(other.clone()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(20_500)).await;
    assert_eq!((job.runs(), other.runs()), (3, 3));
    let stats = scheduler.job("panics:1").unwrap();
    assert_eq!(stats.errors, 3);
    let error: JobError = stats.last_run.unwrap().summary.error.unwrap();
    assert!(error.message.contains("job panics:1 exploded"), "{error:?}");
    let manual = scheduler.run_now("panics:1").await.unwrap_err();
    assert!(matches!(manual, AgentError::RunPanicked { .. }), "{manual}");
    assert!(
        recorder
            .seen()
            .iter()
            .all(|s| !matches!(s, Seen::Completed { id, .. } if id == "panics:1")),
        "a run that panicked has no report to commit"
    );
}
