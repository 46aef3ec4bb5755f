//! The runtime in-process, against the real datadog-checks-base of the test venv.
//!
//! One interpreter per process: every test here shares one runtime, whose checks and
//! configurations are written into one temporary tree; each test uses its own check names.

#![allow(clippy::unwrap_used)] // tests may unwrap (team rule); helpers here are outside #[test]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use pyo3::Python;

use outpost_checks::{
    CheckConfigFile, CheckInstance, ReadyStatus, Runtime, RuntimeConfig, ValidationTarget, conf_d,
};

struct Env {
    runtime: Runtime,
    conf_dir: PathBuf,
    checks_dir: PathBuf,
}

fn venv() -> PathBuf {
    std::env::var_os("OUTPOST_TEST_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv"))
}

fn env() -> &'static Env {
    static ENV: OnceLock<Env> = OnceLock::new();
    ENV.get_or_init(|| {
        let root = tempfile::tempdir().unwrap().keep();
        let conf_dir = root.join("conf.d");
        let checks_dir = root.join("checks.d");
        fs_err::create_dir_all(&conf_dir).unwrap();
        fs_err::create_dir_all(&checks_dir).unwrap();
        let runtime = Runtime::start(
            RuntimeConfig::new(venv(), root.join("run")).with_checks_dir(&checks_dir),
        )
        .expect("the runtime starts with the test venv");
        Env {
            runtime,
            conf_dir,
            checks_dir,
        }
    })
}

/// Writes check `name` and its configuration, and loads every instance.
fn load(name: &str, source: &str, config: &str) -> Vec<CheckInstance> {
    let e = env();
    fs_err::write(e.checks_dir.join(format!("{name}.py")), source).unwrap();
    fs_err::write(e.conf_dir.join(format!("{name}.yaml")), config).unwrap();
    let files = conf_d::find(&e.conf_dir, name).unwrap();
    let mut out = Vec::new();
    for f in &files {
        let loaded = e.runtime.load_check(name, f).unwrap();
        for i in loaded.instances {
            out.push(i.unwrap_or_else(|e| panic!("instance {}: {}", e.index, e.error)));
        }
    }
    out
}

#[test]
fn hello_runs_and_submits() {
    let instances = load(
        "rt_hello",
        r#"
from datadog_checks.base import AgentCheck
__version__ = "1.0.0"

class HelloCheck(AgentCheck):
    __NAMESPACE__ = "hello"
    def check(self, instance):
        tags = ["stage:dev"] + instance.get("tags", [])
        self.gauge("world", 1.0, tags=tags)
        self.count("requests", 3, tags=tags)
        self.service_check("can_connect", AgentCheck.OK, tags=tags)
"#,
        "init_config:\n  service: demo\ninstances:\n  - min_collection_interval: 30\n    tags: [\"team:a\"]\n",
    );
    assert_eq!(instances.len(), 1);
    let inst = &instances[0];
    assert_eq!(inst.version(), "1.0.0");
    assert_eq!(inst.interval(), Duration::from_secs(30));
    assert!(inst.id().as_str().starts_with("rt_hello:"));
    let report = inst.run();
    assert!(report.is_ok(), "{:?}", report.error);
    let m = &report.submissions.metrics;
    assert_eq!(m.len(), 2);
    assert_eq!(m[0].name, "hello.world");
    assert_eq!(m[0].tags, vec!["stage:dev", "team:a", "service:demo"]);
    assert_eq!(m[1].value, 3.0);
    assert_eq!(report.submissions.service_checks[0].status, 0);
    // A second run commits only the second run's submissions.
    let again = inst.run();
    assert_eq!(again.submissions.metrics.len(), 2);
}

/// Relative distance of `estimate` from `expected`.
fn off_by(estimate: u64, expected: u64) -> f64 {
    estimate.abs_diff(expected) as f64 / expected as f64
}

#[test]
fn memory_is_attributed_to_the_check_that_keeps_it() {
    let instances = load(
        "rt_mem",
        r#"
from datadog_checks.base import AgentCheck

class MemCheck(AgentCheck):
    runs = 0

    def check(self, instance):
        self.runs += 1
        if self.runs == 1:
            # Warm-up: what a check's first run imports and caches is its own, and real,
            # but not what is measured here.
            return
        if instance["mode"] == "keep":
            self.kept = bytearray(50 * 1000 * 1000)
        else:
            scratch = [bytes(1024) for _ in range(50 * 1024)]
            del scratch
        self.gauge("mem.ran", 1)
"#,
        "instances:\n  - mode: keep\n  - mode: churn\n",
    );
    let (keep, churn) = (&instances[0], &instances[1]);
    let snap = env().runtime.memory();
    assert!(snap.enabled, "memtrack_enabled defaults to true");
    let mb50 = 50_000_000u64;
    // (Many small blocks: see the unit tests, at a finer sampling interval.)
    assert!(keep.run().is_ok());
    let before = keep.memory().unwrap();
    assert!(keep.run().is_ok());
    let after = keep.memory().unwrap();
    let kept = after.inuse_bytes.saturating_sub(before.inuse_bytes);
    assert!(
        off_by(kept, mb50) < 0.10,
        "kept 50 MB, estimated {kept}: {before:?} -> {after:?}"
    );
    // Allocation counts are exact: at least the 50 MB requested.
    assert!(after.allocated_bytes - before.allocated_bytes >= mb50);
    // The other instance is not charged for it.
    assert!(churn.memory().unwrap().inuse_bytes < 10 * 1024 * 1024);

    // Churn: warm up (first-run caches), then a run returns to its baseline.
    assert!(churn.run().is_ok());
    assert!(churn.run().is_ok());
    let base = churn.memory().unwrap();
    assert!(churn.run().is_ok());
    let end = churn.memory().unwrap();
    assert!(
        end.allocated_bytes - base.allocated_bytes >= 50 * 1024 * 1024,
        "the run allocated 50 MiB: {base:?} -> {end:?}"
    );
    assert!(end.allocations - base.allocations >= 50 * 1024);
    let drift = end.inuse_bytes.abs_diff(base.inuse_bytes);
    assert!(drift < 1_000_000, "back to baseline: {base:?} -> {end:?}");

    // The expvar map has the agent's keys and the per-check entries.
    let snap = env().runtime.memory();
    let expvar = snap.rtloader_expvar();
    for key in [
        "Allocations",
        "Frees",
        "AllocatedBytes",
        "FreedBytes",
        "InuseBytes",
        "UntrackedFrees",
    ] {
        assert!(expvar[key].is_u64(), "{key}: {expvar}");
    }
    assert!(
        expvar["Checks"][keep.id().as_str()]["InuseBytes"]
            .as_u64()
            .unwrap()
            >= 45_000_000
    );
    assert!(snap.total.inuse_bytes >= 45_000_000, "{snap:?}");
    // FreedBytes is AllocatedBytes - InuseBytes, or higher when it must not go down.
    assert!(snap.total.allocated_bytes - snap.total.freed_bytes <= snap.total.inuse_bytes);
}

#[test]
fn two_checks_on_two_runners_are_told_apart() {
    // Both run at once on two threads, the GIL switching between them while they allocate.
    let instances = load(
        "rt_mem_two",
        r#"
import time
from datadog_checks.base import AgentCheck

class TwoCheck(AgentCheck):
    runs = 0

    def check(self, instance):
        self.runs += 1
        if self.runs == 1:
            return  # warm-up
        kept = []
        # Blocks of 4 MB: each is sampled unless the countdown outlasts it, which at the
        # default interval happens with probability e^-15 (at 2 MB it was e^-7.6, enough to
        # miss one block in a few thousand runs of this test).
        for i in range(instance["mb"] // 4):
            kept.append(bytearray(4_000_000))
            kept.append([str(j) for j in range(200)])  # small blocks too, not measured
            time.sleep(0.001)  # hand the GIL over
        self.kept = kept
"#,
        "instances:\n  - mb: 40\n  - mb: 12\n",
    );
    let [big, small] = <[CheckInstance; 2]>::try_from(instances).unwrap();
    assert!(big.run().is_ok() && small.run().is_ok());
    let (big0, small0) = (big.memory().unwrap(), small.memory().unwrap());
    let handle = std::thread::spawn(move || {
        assert!(big.run().is_ok());
        big
    });
    assert!(small.run().is_ok());
    let big = handle.join().unwrap();
    let (big1, small1) = (big.memory().unwrap(), small.memory().unwrap());
    let big_kept = big1.inuse_bytes - big0.inuse_bytes;
    let small_kept = small1.inuse_bytes - small0.inuse_bytes;
    assert!(
        off_by(big_kept, 40_000_000) < 0.10,
        "40 MB kept, estimated {big_kept}"
    );
    assert!(
        off_by(small_kept, 12_000_000) < 0.10,
        "12 MB kept, estimated {small_kept}"
    );
    // Exact per-check allocation totals: each about its own, not the other's.
    let big_alloc = big1.allocated_bytes - big0.allocated_bytes;
    let small_alloc = small1.allocated_bytes - small0.allocated_bytes;
    assert!((40_000_000..44_000_000).contains(&big_alloc), "{big_alloc}");
    assert!(
        (12_000_000..13_200_000).contains(&small_alloc),
        "{small_alloc}"
    );
}

#[test]
fn runner_threads_run_checks_concurrently() {
    // Instance "waiter" blocks until instance "setter" runs: only possible if the first
    // run does not keep the GIL (or the runtime) to itself while it waits.
    let instances = load(
        "rt_concurrent",
        r#"
import threading
from datadog_checks.base import AgentCheck
EVENT = threading.Event()

class ConcurrentCheck(AgentCheck):
    def check(self, instance):
        if instance["role"] == "waiter":
            if not EVENT.wait(timeout=60):
                raise Exception("the setter never ran")
        else:
            EVENT.set()
"#,
        "instances:\n  - role: waiter\n  - role: setter\n",
    );
    let [waiter, setter] = <[CheckInstance; 2]>::try_from(instances).unwrap();
    let started = Instant::now();
    let handle = std::thread::spawn(move || waiter.run());
    let setter_report = setter.run();
    let waiter_report = handle.join().unwrap();
    assert!(setter_report.is_ok());
    assert!(waiter_report.is_ok(), "{:?}", waiter_report.error);
    assert!(started.elapsed() < Duration::from_secs(60));
}

#[test]
fn cancel_stops_a_running_check() {
    let instances = load(
        "rt_stuck",
        r#"
import threading
from datadog_checks.base import AgentCheck

class StuckCheck(AgentCheck):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.stop = threading.Event()
    def cancel(self):
        self.stop.set()
    def check(self, instance):
        if not self.stop.wait(timeout=60):
            raise Exception("never cancelled")
        raise Exception("cancelled")
"#,
        "instances:\n  - {}\n",
    );
    let [inst] = <[CheckInstance; 1]>::try_from(instances).unwrap();
    let inst = std::sync::Arc::new(inst);
    let runner = {
        let inst = std::sync::Arc::clone(&inst);
        std::thread::spawn(move || inst.run())
    };
    // The run waits for cancel(); whether it lands before or during the run, the check
    // sees it, and the run ends with the check's own error.
    inst.cancel().unwrap();
    let report = runner.join().unwrap();
    assert_eq!(report.error.unwrap().message, "cancelled");
}

#[test]
fn validation_verdicts() {
    let e = env();
    let write = |name: &str, src: &str| {
        let p = e.checks_dir.join(name);
        fs_err::write(&p, src).unwrap();
        p
    };
    let ok = write(
        "val_ok.py",
        "from datadog_checks.base import AgentCheck\nclass A(AgentCheck):\n    def check(self, i):\n        pass\n",
    );
    let v = e
        .runtime
        .validate(&ValidationTarget::File(ok), Duration::from_secs(60));
    assert_eq!(v.status, ReadyStatus::Ready, "{v:?}");
    let by_name = e.runtime.validate(
        &ValidationTarget::Name("val_ok".into()),
        Duration::from_secs(60),
    );
    assert_eq!(by_name.status, ReadyStatus::Ready, "{by_name:?}");

    let old = write(
        "val_old.py",
        "import imp\nfrom datadog_checks.base import AgentCheck\ntry:\n    import urllib2\nexcept ImportError:\n    urllib2 = None\nclass A(AgentCheck):\n    def check(self, i):\n        import asyncore\n        from distutils import version\n",
    );
    let v = e
        .runtime
        .validate(&ValidationTarget::File(old), Duration::from_secs(60));
    assert_eq!(v.status, ReadyStatus::NotReady, "{v:?}");
    let text = v.messages.join("\n");
    for flagged in ["'imp'", "'asyncore'", "'distutils'"] {
        assert!(text.contains(flagged), "{flagged} in {text}");
    }
    assert!(
        !text.contains("urllib2"),
        "guarded import not flagged: {text}"
    );

    let broken = write("val_syntax.py", "def f(:\n  pass\n");
    let v = e
        .runtime
        .validate(&ValidationTarget::File(broken), Duration::from_secs(60));
    assert_eq!(v.status, ReadyStatus::NotReady);
    assert!(v.messages[0].contains("SyntaxError"), "{v:?}");

    let two = write(
        "val_two.py",
        "from datadog_checks.base import AgentCheck\nclass A(AgentCheck):\n    pass\nclass B(AgentCheck):\n    pass\n",
    );
    let v = e
        .runtime
        .validate(&ValidationTarget::File(two), Duration::from_secs(60));
    assert_eq!(v.status, ReadyStatus::NotReady);
    assert!(
        v.messages.iter().any(|m| m.contains("2 check classes")),
        "{v:?}"
    );

    let none = write("val_none.py", "X = 1\n");
    let v = e
        .runtime
        .validate(&ValidationTarget::File(none), Duration::from_secs(60));
    assert!(
        v.messages.iter().any(|m| m.contains("no check class")),
        "{v:?}"
    );

    let hang = write("val_hang.py", "while True:\n    pass\n");
    let v = e
        .runtime
        .validate(&ValidationTarget::File(hang), Duration::from_millis(500));
    assert_eq!(v.status, ReadyStatus::Unknown, "{v:?}");
    assert!(v.messages[0].contains("timed out"), "{v:?}");
    // The interpreter is still usable afterwards.
    let v = e.runtime.validate(
        &ValidationTarget::Name("val_ok".into()),
        Duration::from_secs(60),
    );
    assert_eq!(v.status, ReadyStatus::Ready, "{v:?}");
}

#[test]
fn load_errors_are_values() {
    let e = env();
    fs_err::write(
        e.checks_dir.join("rt_importerr.py"),
        "import no_such_module_xyz\n",
    )
    .unwrap();
    let cfg = CheckConfigFile::parse("rt_importerr", Path::new("x.yaml"), "instances: [{}]\n")
        .unwrap()
        .unwrap();
    let err = e.runtime.load_check("rt_importerr", &cfg).unwrap_err();
    assert!(err.to_string().contains("no_such_module_xyz"), "{err}");
    assert!(err.traceback().unwrap().contains("Traceback"), "{err:?}");

    fs_err::write(e.checks_dir.join("rt_noclass.py"), "X = 1\n").unwrap();
    let cfg = CheckConfigFile::parse("rt_noclass", Path::new("x.yaml"), "instances: [{}]\n")
        .unwrap()
        .unwrap();
    let err = e.runtime.load_check("rt_noclass", &cfg).unwrap_err();
    assert_eq!(
        err.to_string(),
        "unable to find a subclass of the base check in module 'rt_noclass'"
    );

    let cfg = CheckConfigFile::parse("rt_absent", Path::new("x.yaml"), "instances: [{}]\n")
        .unwrap()
        .unwrap();
    let err = e.runtime.load_check("rt_absent", &cfg).unwrap_err();
    assert!(
        err.to_string().contains("No module named 'rt_absent'"),
        "{err}"
    );

    // One bad instance does not take the others down; duplicates are refused.
    fs_err::write(
        e.checks_dir.join("rt_init.py"),
        "from datadog_checks.base import AgentCheck\nclass C(AgentCheck):\n    def __init__(self, *a, **k):\n        super().__init__(*a, **k)\n        if self.instance.get('bad'):\n            raise ValueError('bad instance')\n    def check(self, i):\n        pass\n",
    )
    .unwrap();
    let cfg = CheckConfigFile::parse(
        "rt_init",
        Path::new("x.yaml"),
        "instances: [{bad: true}, {ok: 1}, {ok: 1}]\n",
    )
    .unwrap()
    .unwrap();
    let loaded = e.runtime.load_check("rt_init", &cfg).unwrap();
    assert_eq!(loaded.version, "unversioned");
    let errs: Vec<String> = loaded
        .instances
        .iter()
        .map(|i| match i {
            Ok(_) => "ok".to_owned(),
            Err(e) => e.error.to_string(),
        })
        .collect();
    assert!(errs[0].contains("bad instance"), "{errs:?}");
    assert_eq!(errs[1], "ok");
    assert!(errs[2].contains("duplicates instance 1"), "{errs:?}");
}

/// Loads check `name` from `source` for the instances of `config`, keeping failures.
fn load_all(
    name: &str,
    source: &str,
    config: &str,
) -> Vec<Result<CheckInstance, outpost_checks::InstanceLoadError>> {
    let e = env();
    fs_err::write(e.checks_dir.join(format!("{name}.py")), source).unwrap();
    let cfg = CheckConfigFile::parse(name, Path::new("x.yaml"), config)
        .unwrap()
        .unwrap();
    e.runtime.load_check(name, &cfg).unwrap().instances
}

#[test]
fn legacy_constructors_get_agent_config() {
    let instances = load(
        "rt_legacy",
        r#"
from datadog_checks.base import AgentCheck
import datadog_agent

class LegacyCheck(AgentCheck):
    def __init__(self, name, init_config, agentConfig, instances=None):
        super(LegacyCheck, self).__init__(name, init_config, agentConfig, instances)
        self.settings = agentConfig

    def check(self, instance):
        assert self.agentConfig is self.settings and isinstance(self.settings, dict)
        self.gauge("rt_legacy.metadata", int(self.agentConfig["enable_metadata_collection"]))
        self.gauge("rt_legacy.runners", self.agentConfig["check_runners"])
        self.gauge("rt_legacy.instances", len(self.instances), tags=["port:%d" % instance["port"]])
        h = datadog_agent.headers(self.agentConfig, http_host="h.example")
        self.service_check("rt_legacy.headers", AgentCheck.OK, message=h["Host"])
"#,
        "instances:
  - port: 1
  - port: 2
",
    );
    assert_eq!(instances.len(), 2);
    for (i, inst) in instances.iter().enumerate() {
        let report = inst.run();
        assert!(report.is_ok(), "{:?}", report.error);
        let m = &report.submissions.metrics;
        assert_eq!(
            m[0].value, 1.0,
            "enable_metadata_collection defaults to true"
        );
        assert_eq!(m[1].value, 4.0, "check_runners is the default runners");
        assert_eq!(m[2].value, 1.0, "one instance per check");
        assert_eq!(m[2].tags, vec![format!("port:{}", i + 1)]);
        assert_eq!(report.submissions.service_checks[0].message, "h.example");
    }
}

#[test]
fn constructor_errors_are_the_checks_own() {
    // A current-style check: the first call's error, once, as the check raised it.
    let failed = load_all(
        "rt_ctor_config",
        r#"
from datadog_checks.base import AgentCheck
from datadog_checks.base.errors import ConfigurationError

class C(AgentCheck):
    def __init__(self, name, init_config, instances):
        super().__init__(name, init_config, instances)
        port = self.instance["port"]
        if not str(port).isdigit():
            raise ConfigurationError("`%s` is an invalid `port`" % port)
    def check(self, instance):
        pass
"#,
        "instances: [{port: not-a-port}]
",
    );
    let err = &failed[0].as_ref().unwrap_err().error;
    assert_eq!(
        err.to_string(),
        "ConfigurationError: `not-a-port` is an invalid `port`"
    );
    let tb = err.traceback().unwrap();
    assert_eq!(
        tb.matches("Traceback (most recent call last)").count(),
        1,
        "{tb}"
    );
    assert!(tb.contains("ConfigurationError"), "{tb}");
    assert!(
        !tb.contains("agentConfig"),
        "the retry's error is not shown: {tb}"
    );

    // A constructor that wants something else than agentConfig: the first error too.
    let failed = load_all(
        "rt_ctor_other",
        r#"
from datadog_checks.base import AgentCheck
class C(AgentCheck):
    def __init__(self, name, init_config, instances, extra):
        super().__init__(name, init_config, instances)
    def check(self, instance):
        pass
"#,
        "instances: [{}]
",
    );
    let err = &failed[0].as_ref().unwrap_err().error;
    let text = err.to_string();
    assert!(text.starts_with("TypeError: "), "{text}");
    assert!(text.contains("'extra'"), "{text}");

    // A legacy constructor that fails for its own reason: that reason, not the TypeError
    // of the first call without agentConfig.
    let failed = load_all(
        "rt_ctor_legacy",
        r#"
from datadog_checks.base.checks.prometheus import GenericPrometheusCheck
class C(GenericPrometheusCheck):
    pass
"#,
        "instances: [{prometheus_url: 'http://127.0.0.1:1/metrics'}]
",
    );
    let err = &failed[0].as_ref().unwrap_err().error;
    assert_eq!(
        err.to_string(),
        "CheckException: You have to define a namespace for each prometheus check"
    );
    assert!(!err.traceback().unwrap().contains("'agentConfig'"));
}

#[test]
fn handles_cross_threads() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Runtime>();
    send_sync::<CheckInstance>();
    send_sync::<outpost_checks::RunReport>();
}

#[test]
fn global_counters_are_exact_on_a_known_pattern() {
    use pyo3::ffi;
    let _ = env();
    let total = || outpost_checks::memtrack::snapshot().total;
    // With the GIL held no other thread allocates from the tracked domains: every change of
    // the totals is this pattern's.
    Python::attach(|_py| {
        let snap = outpost_checks::memtrack::snapshot();
        assert!(
            snap.enabled && snap.exact,
            "exact sizes under pymalloc: {snap:?}"
        );
        assert_eq!(snap.untracked_frees, 0);
        let s0 = total();
        // Small blocks of 16-byte multiples: pymalloc's size classes hold exactly that much
        // (and a sampled block is counted at its requested size), so bytes are known.
        let mut small = Vec::new();
        let mut small_bytes = 0u64;
        for i in 1..=32usize {
            for k in 0..10 {
                let size = 16 * i;
                // SAFETY: the GIL is held; the blocks are freed below.
                let p = unsafe {
                    match k % 3 {
                        0 => ffi::PyObject_Malloc(size),
                        1 => ffi::PyMem_Malloc(size),
                        _ => ffi::PyMem_Calloc(i, 16),
                    }
                };
                assert!(!p.is_null());
                small.push((p, k % 3 == 0));
                small_bytes += size as u64;
            }
        }
        let s1 = total();
        assert_eq!(s1.allocations - s0.allocations, 320);
        assert_eq!(s1.allocated_bytes - s0.allocated_bytes, small_bytes);
        assert_eq!(s1.frees, s0.frees);
        assert_eq!(s1.freed_bytes, s0.freed_bytes);
        assert_eq!(s1.inuse_bytes - s0.inuse_bytes, small_bytes);

        // Large blocks come from malloc, counted at their usable size: a few bytes more.
        // SAFETY: the GIL is held; the blocks are freed below.
        let mut large: Vec<_> = (0..5)
            .map(|_| unsafe { ffi::PyMem_Malloc(100_000) })
            .collect();
        // SAFETY: a live block of this domain, replaced by the result.
        large[0] = unsafe { ffi::PyMem_Realloc(large[0], 200_000) };
        assert!(large.iter().all(|p| !p.is_null()));
        let s2 = total();
        assert_eq!(
            s2.allocations - s1.allocations,
            6,
            "five mallocs and the realloc's block"
        );
        assert_eq!(s2.frees - s1.frees, 1, "the realloc's old block");
        let (allocated, freed) = (
            s2.allocated_bytes - s1.allocated_bytes,
            s2.freed_bytes - s1.freed_bytes,
        );
        assert!(
            (700_000..700_000 + 6 * 4096).contains(&allocated),
            "{allocated}"
        );
        assert!((100_000..100_000 + 4096).contains(&freed), "{freed}");
        assert_eq!(s2.inuse_bytes - s1.inuse_bytes, allocated - freed);

        // Half the small blocks and every large one go: the rest is exactly what is left.
        // SAFETY (both closures): live blocks, each freed by its own family.
        let free = |(p, object): (*mut std::ffi::c_void, bool)| unsafe {
            if object {
                ffi::PyObject_Free(p);
            } else {
                ffi::PyMem_Free(p);
            }
        };
        let kept: Vec<_> = small.split_off(160);
        let kept_bytes: u64 = (17..=32u64).map(|i| 16 * i * 10).sum();
        for b in small
            .into_iter()
            .chain(large.into_iter().map(|p| (p, false)))
        {
            free(b);
        }
        let s3 = total();
        assert_eq!(s3.inuse_bytes - s0.inuse_bytes, kept_bytes);
        assert_eq!(s3.frees - s0.frees, 1 + 160 + 5);
        kept.into_iter().for_each(free);
        let s4 = total();
        assert_eq!(s4.allocations - s0.allocations, s4.frees - s0.frees);
        assert_eq!(
            s4.allocated_bytes - s0.allocated_bytes,
            s4.freed_bytes - s0.freed_bytes
        );
        assert_eq!(
            s4.inuse_bytes, s0.inuse_bytes,
            "back to the baseline exactly"
        );
    });
}

/// Runs test `name` of this binary again in a child process with `vars` set (for what is
/// chosen when the interpreter starts); true in that child, where the test goes on.
fn in_child(name: &str, vars: &[(&str, &str)]) -> bool {
    const CHILD: &str = "OUTPOST_TEST_CHILD";
    if std::env::var_os(CHILD).is_some() {
        return true;
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", name, "--nocapture"])
        .env(CHILD, "1")
        .envs(vars.iter().copied())
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("1 passed"), "the case ran: {text}");
    false
}

#[test]
fn without_pymalloc_the_totals_fall_back_to_the_estimate() {
    if !in_child(
        "without_pymalloc_the_totals_fall_back_to_the_estimate",
        &[("PYTHONMALLOC", "malloc")],
    ) {
        return;
    }
    use pyo3::ffi;
    let _ = env();
    Python::attach(|_py| {
        let snap = outpost_checks::memtrack::snapshot();
        assert!(snap.enabled, "tracking is on: {snap:?}");
        assert!(!snap.exact, "no block sizes without pymalloc: {snap:?}");
        let s0 = snap.total;
        // Requested sizes, exactly counted; the bytes in use are the sampled estimate.
        // SAFETY: the GIL is held; the blocks are freed below.
        let blocks: Vec<_> = (1..=100)
            .map(|i| unsafe { ffi::PyMem_Malloc(i * 10) })
            .collect();
        assert!(blocks.iter().all(|p| !p.is_null()));
        let s1 = outpost_checks::memtrack::snapshot().total;
        assert_eq!(s1.allocations - s0.allocations, 100);
        assert_eq!(s1.allocated_bytes - s0.allocated_bytes, 10 * 5050);
        for p in blocks {
            // SAFETY: live blocks of this domain.
            unsafe { ffi::PyMem_Free(p) };
        }
        let s2 = outpost_checks::memtrack::snapshot().total;
        assert_eq!(s2.frees - s1.frees, 100);
        // FreedBytes follows AllocatedBytes - InuseBytes and never goes down.
        assert!(s2.freed_bytes >= s1.freed_bytes);
        assert!(s2.freed_bytes <= s2.allocated_bytes);
    });
}

#[test]
fn a_full_arena_region_leaves_counts_exact_but_not_bytes() {
    // A region of 64 MiB holds the interpreter's start-up; the blocks below fill it, and
    // pymalloc then serves small requests from `malloc`.
    if !in_child(
        "a_full_arena_region_leaves_counts_exact_but_not_bytes",
        &[(outpost_checks::memtrack::REGION_MIB_ENV, "64")],
    ) {
        return;
    }
    use pyo3::ffi;
    use pyo3::types::PyAnyMethods as _;
    let _ = env();
    Python::attach(|py| {
        let snap = outpost_checks::memtrack::snapshot();
        assert!(snap.enabled && snap.exact, "start-up fits: {snap:?}");
        let s0 = snap.total;
        // 96 MiB of 512-byte blocks: more than the region has left.
        let blocks: Vec<*mut u8> = (0..196_608)
            .map(|i| {
                // SAFETY: the GIL is held; the blocks are freed below.
                let p = unsafe { ffi::PyObject_Malloc(512) }.cast::<u8>();
                assert!(!p.is_null(), "block {i}");
                // SAFETY: a live block of 512 bytes.
                unsafe { p.write_bytes(i as u8, 512) };
                p
            })
            .collect();
        let full = outpost_checks::memtrack::snapshot();
        assert!(!full.exact, "the region ran out: {full:?}");
        assert_eq!(
            full.total.allocations - s0.allocations,
            blocks.len() as u64,
            "allocations stay exact"
        );
        for (i, p) in blocks.into_iter().enumerate() {
            // SAFETY: live blocks of this domain, written above.
            unsafe {
                assert_eq!(*p.add(511), i as u8, "block {i} kept its bytes");
                ffi::PyObject_Free(p.cast());
            }
        }
        let after = outpost_checks::memtrack::snapshot();
        assert!(!after.exact, "and stays reported inexact");
        assert!(after.total.frees - s0.frees >= 196_608);
        // The interpreter goes on, in the region again and out of it.
        let n: usize = py
            .eval(c"len({str(i): [i] * 3 for i in range(100000)})", None, None)
            .unwrap()
            .extract()
            .unwrap();
        assert_eq!(n, 100_000);
    });
}

#[test]
fn reallocations_between_pymalloc_and_malloc_are_counted_and_pymalloc_keeps_its_count() {
    // In a process of its own: `sys.getallocatedblocks()` counts every thread's blocks, and
    // the Python code below lets other tests' threads take the GIL.
    if !in_child(
        "reallocations_between_pymalloc_and_malloc_are_counted_and_pymalloc_keeps_its_count",
        &[],
    ) {
        return;
    }
    use pyo3::ffi;
    use pyo3::types::PyAnyMethods as _;
    let _ = env();
    Python::attach(|py| {
        let total = || outpost_checks::memtrack::snapshot().total;
        let getallocatedblocks = py
            .import("sys")
            .unwrap()
            .getattr("getallocatedblocks")
            .unwrap();
        let blocks = || -> isize { getallocatedblocks.call0().unwrap().extract().unwrap() };
        let b0 = blocks();
        let s0 = total();
        // A block through every move: within pymalloc, out to malloc, within malloc (a malloc
        // block stays one when it shrinks: pymalloc cannot know how much of it is valid).
        // SAFETY: the GIL is held; freed below.
        let mut p = unsafe { ffi::PyMem_Malloc(100) };
        for size in [300, 2000, 100_000, 400, 48] {
            // SAFETY: a live block of this domain, replaced by the result.
            p = unsafe { ffi::PyMem_Realloc(p, size) };
            assert!(!p.is_null());
            // SAFETY: a live block of `size` bytes.
            unsafe { p.cast::<u8>().add(size - 1).write(7) };
        }
        // SAFETY: a live block of this domain.
        unsafe { ffi::PyMem_Free(p) };
        let s1 = total();
        assert_eq!(
            s1.allocations - s0.allocations,
            6,
            "a malloc, five reallocs"
        );
        assert_eq!(s1.frees - s0.frees, 6);
        assert_eq!(
            s1.inuse_bytes, s0.inuse_bytes,
            "back to the baseline exactly"
        );
        assert_eq!(blocks(), b0);

        // Sampled and large blocks reach pymalloc's free through the RAW domain, and pymalloc
        // counted them when they were made: what sys.getallocatedblocks() says does not drift.
        let churn = c"
for _ in range(5):
    xs = [str(i) * 3 for i in range(200000)]
    ys = [bytearray(2000) for _ in range(2000)]
    zs = [[i] * 100 for i in range(2000)]
    del xs, ys, zs
";
        let collect = || py.run(c"import gc; gc.collect()", None, None).unwrap();
        py.run(churn, None, None).unwrap();
        collect();
        let (before, samples) = (blocks(), outpost_checks::memtrack::snapshot());
        py.run(churn, None, None).unwrap();
        collect();
        let after = blocks();
        let bytes = outpost_checks::memtrack::snapshot().total.allocated_bytes
            - samples.total.allocated_bytes;
        // Some 80 MB allocated: about 300 samples at 256 KiB, each of which would be one block
        // of drift.
        assert!(bytes > 50_000_000, "{bytes}");
        assert!((after - before).abs() < 50, "{before} -> {after}");
    });
}
