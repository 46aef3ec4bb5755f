//! A run that disables its job, on tokio's paused clock with Rust jobs: the job is not
//! scheduled again, the observer hears of it once, `cancel()` is requested and the scheduler
//! lets go of it; its statistics stay and say why; another job keeps its schedule and nothing
//! is late; adding the ID again schedules it afresh, removing it forgets it.

#![allow(clippy::unwrap_used)] // tests may unwrap

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use outpost_agent::AgentError;
use outpost_agent::scheduler::{
    DisableReason, Disabled, Job, JobReport, Observer, RunInfo, RunSummary, Scheduler,
    SchedulerConfig,
};

const REASON: DisableReason = DisableReason::MemoryLimit {
    limit_bytes: 1000,
    inuse_bytes: 990,
};

/// Runs at its interval; its run number `disable_at` (1-based) asks to be disabled.
struct TestJob {
    id: String,
    interval: Duration,
    disable_at: Option<usize>,
    runs: AtomicUsize,
    cancels: AtomicUsize,
}

impl TestJob {
    fn new(id: &str, disable_at: Option<usize>) -> Arc<Self> {
        Arc::new(Self {
            id: id.to_owned(),
            interval: Duration::from_secs(10),
            disable_at,
            runs: AtomicUsize::new(0),
            cancels: AtomicUsize::new(0),
        })
    }

    fn runs(&self) -> usize {
        self.runs.load(Ordering::SeqCst)
    }
}

struct TestReport {
    disable: bool,
}

impl JobReport for TestReport {
    fn summary(&self) -> RunSummary {
        RunSummary::default()
    }

    fn disable(&self) -> Option<DisableReason> {
        self.disable.then_some(REASON)
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

    fn run(&self) -> TestReport {
        let run = self.runs.fetch_add(1, Ordering::SeqCst) + 1;
        TestReport {
            disable: self.disable_at == Some(run),
        }
    }

    fn cancel(&self) {
        self.cancels.fetch_add(1, Ordering::SeqCst);
    }
}

#[derive(Default)]
struct Recorder {
    disabled: Mutex<Vec<(String, Disabled)>>,
    retired: Mutex<Vec<String>>,
}

impl Observer<TestJob> for Recorder {
    fn completed(&self, _job: &Arc<TestJob>, _report: &TestReport, _run: &RunInfo) {}

    fn retired(&self, job: &Arc<TestJob>) {
        self.retired.lock().unwrap().push(job.id.clone());
    }

    fn disabled(&self, job: &Arc<TestJob>, disabled: &Disabled) {
        self.disabled
            .lock()
            .unwrap()
            .push((job.id.clone(), *disabled));
    }
}

fn start() -> (Scheduler<TestJob>, Arc<Recorder>) {
    let recorder = Arc::new(Recorder::default());
    let scheduler = Scheduler::start(
        SchedulerConfig {
            runners: 2,
            timeout: None,
            spread: false,
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

#[tokio::test(start_paused = true)]
async fn a_disabled_job_stops_and_the_others_keep_their_schedule() {
    let (scheduler, recorder) = start();
    let hog = TestJob::new("hog:1", Some(2));
    let steady = TestJob::new("steady:1", None);
    scheduler.add(hog.clone()).await.unwrap();
    scheduler.add(steady.clone()).await.unwrap();
    // Runs at 0, 10 (disabled), then never again; the steady one at 0, 10, ..., 60.
    tokio::time::sleep(Duration::from_millis(65_000)).await;
    until("the observer heard of it", || {
        !recorder.disabled.lock().unwrap().is_empty()
    })
    .await;
    assert_eq!(hog.runs(), 2);
    assert_eq!(steady.runs(), 7);
    until("cancel was requested", || {
        hog.cancels.load(Ordering::SeqCst) == 1
    })
    .await;
    let seen = recorder.disabled.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].0, "hog:1");
    assert_eq!(seen[0].1.reason, REASON);
    assert!(recorder.retired.lock().unwrap().is_empty());
    // The scheduler let go of it: the test holds the last reference.
    until("the scheduler let go of the job", || {
        Arc::strong_count(&hog) == 1
    })
    .await;

    let stats = scheduler.job("hog:1").unwrap();
    assert_eq!(stats.runs, 2);
    assert_eq!(stats.next_run_in, None);
    assert!(!stats.running);
    assert_eq!(stats.disabled.unwrap().reason, REASON);
    let json = serde_json::to_value(&stats).unwrap();
    assert_eq!(json["disabled"]["reason"], "memory_limit");
    assert_eq!(json["disabled"]["limit_bytes"], 1000);
    assert_eq!(json["disabled"]["inuse_bytes"], 990);
    assert!(json["disabled"]["at"].as_f64().unwrap() > 0.0);
    let totals = scheduler.stats();
    assert_eq!((totals.jobs, totals.disabled), (1, 1));
    assert_eq!(totals.late + totals.overruns + totals.abandoned_total, 0);
    assert_eq!(totals.queued, 0);
    assert_eq!(totals.start_delay.total(), 9, "2 + 7 scheduled runs");
    assert_eq!(totals.start_delay.at_most(1), 9, "all on time");

    // Run-now does not know it any more.
    assert!(matches!(
        scheduler.run_now("hog:1").await,
        Err(AgentError::UnknownJob { .. })
    ));

    // Added again, it is scheduled afresh (new statistics) and runs.
    let again = TestJob::new("hog:1", None);
    scheduler.add(again.clone()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(15_000)).await;
    assert_eq!(again.runs(), 2, "at once, then 10 s later");
    let stats = scheduler.job("hog:1").unwrap();
    assert_eq!((stats.runs, stats.disabled), (2, None));
    let totals = scheduler.stats();
    assert_eq!((totals.jobs, totals.disabled), (2, 0));
}

#[tokio::test(start_paused = true)]
async fn a_manual_run_can_disable_and_removing_a_disabled_job_forgets_it() {
    let (scheduler, _recorder) = start();
    let hog = TestJob::new("hog:2", Some(2));
    scheduler.add(hog.clone()).await.unwrap();
    // The first run (at once) is fine; the second, asked for now, disables the job.
    tokio::time::sleep(Duration::from_millis(5_000)).await;
    assert_eq!(hog.runs(), 1);
    let run = scheduler.run_now("hog:2").await.unwrap();
    assert!(run.report.disable);
    until("it is disabled", || scheduler.stats().disabled == 1).await;
    assert_eq!(scheduler.stats().jobs, 0);
    assert!(matches!(
        scheduler.run_now("hog:2").await,
        Err(AgentError::UnknownJob { .. })
    ));
    // Its due time at 10 s never comes.
    tokio::time::sleep(Duration::from_millis(30_000)).await;
    assert_eq!(hog.runs(), 2);
    let stats = scheduler.job("hog:2").unwrap();
    assert_eq!(
        (stats.runs, stats.manual_runs, stats.next_run_in),
        (2, 1, None)
    );

    assert!(scheduler.remove("hog:2").await.unwrap());
    assert!(scheduler.job("hog:2").is_none());
    let totals = scheduler.stats();
    assert_eq!((totals.jobs, totals.disabled), (0, 0));
    assert!(!scheduler.remove("hog:2").await.unwrap());
}
