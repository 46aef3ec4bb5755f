//! Where submissions go while Python runs.
//!
//! Every loaded instance owns a [`Collector`]. A submission from Python finds it without a
//! lock on the hot path: [`CurrentCheck`] puts the running instance's collector in a
//! thread-local for the duration of `run()`, and the builtin functions use it when the
//! `check_id` they receive matches. Checks that submit from threads of their own (or with
//! another instance's ID) are routed through a registry keyed by check ID. Pushing takes a
//! short uncontended mutex and never waits for I/O, so Python is never blocked by the
//! agent's sinks; the runner takes everything out after each run ([`Collector::take`]).
//!
//! The collector appends the instance's `service:<x>` tag to every submission, as the Go
//! agent's sender does after `FinalizeCheckServiceTag`.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, LazyLock, Mutex, PoisonError, RwLock, Weak};

use crate::submission::{
    CheckLog, Event, EventPlatformEvent, ExternalTags, HistogramBucket, Metric, ServiceCheck,
    Submissions,
};

/// What an instance submitted since the last [`Collector::take`].
#[derive(Debug, Default)]
pub(crate) struct Pending {
    pub(crate) submissions: Submissions,
    pub(crate) metadata: BTreeMap<String, String>,
    pub(crate) external_tags: Vec<ExternalTags>,
}

/// The per-instance sink of submissions.
#[derive(Debug)]
pub(crate) struct Collector {
    pub(crate) check_id: String,
    pub(crate) check_name: String,
    service_tag: Option<String>,
    pending: Mutex<Pending>,
}

impl Collector {
    pub(crate) fn new(check_id: String, check_name: String, service: Option<&str>) -> Self {
        Self {
            check_id,
            check_name,
            service_tag: service.map(|s| format!("service:{s}")),
            pending: Mutex::new(Pending::default()),
        }
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, Pending> {
        // A panic while holding this lock cannot leave `Pending` half-updated in a way that
        // matters (pushes are single Vec operations), so a poisoned lock is still usable.
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn finish_tags(&self, mut tags: Vec<String>) -> Vec<String> {
        if let Some(s) = &self.service_tag {
            tags.push(s.clone());
        }
        tags
    }

    pub(crate) fn push_metric(&self, mut m: Metric) {
        m.tags = self.finish_tags(std::mem::take(&mut m.tags));
        self.pending().submissions.metrics.push(m);
    }

    pub(crate) fn push_service_check(&self, mut sc: ServiceCheck) {
        sc.tags = self.finish_tags(std::mem::take(&mut sc.tags));
        self.pending().submissions.service_checks.push(sc);
    }

    pub(crate) fn push_event(&self, mut e: Event) {
        if e.tags.is_some() || self.service_tag.is_some() {
            e.tags = Some(self.finish_tags(e.tags.take().unwrap_or_default()));
        }
        self.pending().submissions.events.push(e);
    }

    pub(crate) fn push_histogram_bucket(&self, mut b: HistogramBucket) {
        b.tags = self.finish_tags(std::mem::take(&mut b.tags));
        self.pending().submissions.histogram_buckets.push(b);
    }

    pub(crate) fn push_event_platform_event(&self, e: EventPlatformEvent) {
        self.pending().submissions.event_platform_events.push(e);
    }

    pub(crate) fn push_log(&self, line: String) {
        self.pending().submissions.logs.push(CheckLog { line });
    }

    pub(crate) fn set_metadata(&self, name: String, value: String) {
        self.pending().metadata.insert(name, value);
    }

    pub(crate) fn push_external_tags(&self, tags: ExternalTags) {
        self.pending().external_tags.push(tags);
    }

    /// Everything submitted since the last call.
    pub(crate) fn take(&self) -> Pending {
        std::mem::take(&mut *self.pending())
    }
}

static REGISTRY: LazyLock<RwLock<HashMap<String, Weak<Collector>>>> =
    LazyLock::new(|| RwLock::new(HashMap::new()));

/// Makes `collector` reachable by its check ID (replacing an older instance with the same ID).
pub(crate) fn register(collector: &Arc<Collector>) {
    REGISTRY
        .write()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(collector.check_id.clone(), Arc::downgrade(collector));
}

/// Removes `collector` from the registry, unless another instance took its ID since.
pub(crate) fn unregister(collector: &Collector) {
    let mut map = REGISTRY.write().unwrap_or_else(PoisonError::into_inner);
    if let Some(w) = map.get(&collector.check_id)
        && std::ptr::eq(w.as_ptr(), collector)
    {
        map.remove(&collector.check_id);
    }
}

thread_local! {
    static CURRENT: RefCell<Option<Arc<Collector>>> = const { RefCell::new(None) };
}

/// Marks an instance as the one running on this thread until dropped (restores the
/// previous one, so nesting is safe).
pub(crate) struct CurrentCheck {
    previous: Option<Arc<Collector>>,
}

impl CurrentCheck {
    pub(crate) fn enter(collector: &Arc<Collector>) -> Self {
        let previous = CURRENT.with(|c| c.replace(Some(Arc::clone(collector))));
        Self { previous }
    }
}

impl Drop for CurrentCheck {
    fn drop(&mut self) {
        let previous = self.previous.take();
        CURRENT.with(|c| *c.borrow_mut() = previous);
    }
}

/// Runs `f` with the collector of `check_id`: the thread's current one when it matches,
/// else the registered one. Returns `None` when no live instance has that ID.
pub(crate) fn with_collector<R>(check_id: &str, f: impl FnOnce(&Collector) -> R) -> Option<R> {
    let mut f = Some(f);
    let fast = CURRENT.with(|c| {
        let cur = c.borrow();
        match cur.as_ref() {
            Some(col) if col.check_id == check_id => f.take().map(|f| f(col)),
            _ => None,
        }
    });
    if fast.is_some() {
        return fast;
    }
    let found = REGISTRY
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .get(check_id)
        .and_then(Weak::upgrade)?;
    f.take().map(|f| f(&found))
}

/// Runs `f` with the collector of the instance running on this thread, if any.
pub(crate) fn with_current<R>(f: impl FnOnce(&Collector) -> R) -> Option<R> {
    CURRENT.with(|c| c.borrow().as_ref().map(|col| f(col)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::submission::MetricType;

    fn metric(name: &str, tags: &[&str]) -> Metric {
        Metric {
            name: name.into(),
            metric_type: MetricType::Gauge,
            value: 1.0,
            tags: tags.iter().map(|t| t.to_string()).collect(),
            hostname: String::new(),
            flush_first_value: false,
        }
    }

    #[test]
    fn service_tag_is_appended_last() {
        let c = Collector::new("x:1".into(), "x".into(), Some("web"));
        c.push_metric(metric("m", &["b:1", "a:2"]));
        c.push_event(Event::default());
        let p = c.take();
        assert_eq!(
            p.submissions.metrics[0].tags,
            vec!["b:1", "a:2", "service:web"]
        );
        assert_eq!(
            p.submissions.events[0].tags,
            Some(vec!["service:web".to_string()])
        );
        assert!(c.take().submissions.is_empty(), "take empties");
        let plain = Collector::new("y:1".into(), "y".into(), None);
        plain.push_event(Event::default());
        assert_eq!(plain.take().submissions.events[0].tags, None);
    }

    #[test]
    fn routing_prefers_current_then_registry() {
        let a = Arc::new(Collector::new("route:a".into(), "route".into(), None));
        let b = Arc::new(Collector::new("route:b".into(), "route".into(), None));
        register(&a);
        register(&b);
        {
            let _cur = CurrentCheck::enter(&a);
            with_collector("route:a", |c| c.push_metric(metric("to_a", &[]))).unwrap();
            with_collector("route:b", |c| c.push_metric(metric("to_b", &[]))).unwrap();
            assert!(with_collector("route:none", |_| ()).is_none());
            assert_eq!(
                with_current(|c| c.check_id.clone()).as_deref(),
                Some("route:a")
            );
        }
        assert!(with_current(|_| ()).is_none(), "guard restores");
        // From another thread, the registry still finds both.
        std::thread::spawn(|| {
            with_collector("route:b", |c| c.push_metric(metric("thread", &[]))).unwrap();
        })
        .join()
        .unwrap();
        assert_eq!(a.take().submissions.metrics.len(), 1);
        assert_eq!(b.take().submissions.metrics.len(), 2);
        unregister(&a);
        drop(a);
        assert!(with_collector("route:a", |_| ()).is_none());
        unregister(&b);
    }
}
