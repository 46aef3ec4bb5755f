//! Every request runs inside an `api.request` span carrying its module, method, route and
//! status. A small recording subscriber (installed globally: the server's tasks run on other
//! threads) captures the span fields.
// Test helpers outside #[test] fns: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use common::*;
use outpost_api::{Api, Json, Module};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};
use tracing_core::span::Current;

type Fields = BTreeMap<String, String>;

#[derive(Default)]
struct Recorder {
    next: AtomicU64,
    spans: Mutex<HashMap<u64, (&'static Metadata<'static>, Fields)>>,
}

thread_local! {
    static STACK: RefCell<Vec<u64>> = const { RefCell::new(Vec::new()) };
}

struct FieldVisitor<'a>(&'a mut Fields);

impl Visit for FieldVisitor<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

impl Subscriber for &'static Recorder {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, attrs: &Attributes<'_>) -> Id {
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let mut fields = Fields::new();
        attrs.record(&mut FieldVisitor(&mut fields));
        self.spans
            .lock()
            .unwrap()
            .insert(id, (attrs.metadata(), fields));
        Id::from_u64(id)
    }
    fn record(&self, span: &Id, values: &Record<'_>) {
        if let Some((_, fields)) = self.spans.lock().unwrap().get_mut(&span.into_u64()) {
            values.record(&mut FieldVisitor(fields));
        }
    }
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, _: &Event<'_>) {}
    fn enter(&self, span: &Id) {
        STACK.with(|s| s.borrow_mut().push(span.into_u64()));
    }
    fn exit(&self, _: &Id) {
        STACK.with(|s| s.borrow_mut().pop());
    }
    fn current_span(&self) -> Current {
        let top = STACK.with(|s| s.borrow().last().copied());
        match top.and_then(|id| self.spans.lock().unwrap().get(&id).map(|(m, _)| (id, *m))) {
            Some((id, meta)) => Current::new(Id::from_u64(id), meta),
            None => Current::none(),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_request_has_a_span_with_module_method_route_and_status() {
    let recorder: &'static Recorder = Box::leak(Box::default());
    tracing::subscriber::set_global_default(recorder).unwrap();

    let mut builder = Api::builder();
    builder.mount(Module::new("checks").get("/{id}/status", || async {
        // The handler reports the span it runs in.
        Json(tracing::Span::current().id().map(|id| id.into_u64()))
    }));
    let srv = start(builder.build().unwrap()).await;
    let reply = request(&srv.sock, "GET", "/checks/cpu/status").await;
    assert_eq!(reply.status, 200);
    let id: u64 = serde_json::from_value(reply.json()).expect("the handler ran inside a span");
    let (meta, fields) = recorder.spans.lock().unwrap().get(&id).cloned().unwrap();
    assert_eq!(meta.name(), "api.request");
    assert_eq!(fields.get("http.method").map(String::as_str), Some("GET"));
    assert_eq!(fields.get("api.module").map(String::as_str), Some("checks"));
    assert_eq!(
        fields.get("http.route").map(String::as_str),
        Some("/checks/{id}/status")
    );
    assert_eq!(fields.get("http.status").map(String::as_str), Some("200"));
    srv.stop().await.unwrap();
}
