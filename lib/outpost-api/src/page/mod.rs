//! Status pages on the read-only listener: an HTML page rendered on the server, its script
//! and style built into the binary, and an update channel the page polls.
//!
//! A process describes its page with a [`PageSpec`] (tables, their columns and how each
//! column is shown, [`Format`]) and a [`PageSource`] that gives the rows of every table
//! ([`TableInput`]). [`routes`] turns them into the `GET` routes of a
//! [`ReadOnlyRoutes`](crate::ReadOnlyRoutes) group mounted at the root:
//!
//! | route | answer |
//! |---|---|
//! | `GET /` | the page, every row rendered (`text/html`) |
//! | `GET /assets/page.js`, `/assets/page.css`, `/assets/icon.svg` | the script and style sheet, with an `ETag`; `If-None-Match` gets 304 |
//! | `GET /api/page` | every row of every table as JSON (the update format with `"full": true`) |
//! | `GET /api/page/updates?since=E.G` | what changed after version `E.G` ([`DeltaPage::delta`]) |
//!
//! # Update protocol
//! The page carries the version it was rendered at (`data-v` on `<body>`). Every
//! [`POLL_INTERVAL`] its script asks `/api/page/updates?since=<version>` and applies the
//! answer: fields of rows it knows, new rows whole, rows gone, then keeps the answer's `v`
//! for the next poll (details in [`delta`](DeltaPage)). Polling rather than a stream keeps the
//! listener's limits as they are: each poll is one short request on a kept-alive connection.
//!
//! # Security
//! Every answer carries [`CONTENT_SECURITY_POLICY`] (scripts, styles and fetches from the
//! page's own origin only; no inline script, no frame, no form target), `X-Content-Type-Options:
//! nosniff`, `Referrer-Policy: no-referrer` and `X-Frame-Options: DENY`. The page loads
//! nothing from elsewhere (no font, no CDN): it works without a network. The HTML escapes
//! every value; the script writes values with `textContent` only. The routes are `GET` only
//! like everything on the listener, and show what the process's Unix-socket API shows to
//! any local reader.

mod delta;
mod render;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, StatusCode, Uri, header};

pub use delta::{Cell, DeltaPage, RowInput, SERIES_LEN, TableInput, Version, round1};
pub use render::render_page;

use crate::readonly::ReadOnlyRoutes;

/// How often the page asks for updates.
pub const POLL_INTERVAL: Duration = Duration::from_secs(2);

/// The `Content-Security-Policy` of every answer of a status page.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self'; connect-src 'self'; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

/// How a column's values are shown (the script knows the same formats).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// A string, as it is.
    Text,
    /// A state (`ok`, `warning`, `error`, `not ready`, ...): coloured by its value.
    State,
    /// An integer.
    Count,
    /// Milliseconds (`12.3 ms`, `1.23 s`).
    Millis,
    /// Bytes (`512 B`, `1.2 KiB`, `3.4 MiB`).
    Bytes,
    /// Unix seconds, shown as the UTC time of day (`06:12:01`).
    Clock,
    /// A series of numbers ([`Cell::Series`]): a sparkline.
    Spark,
    /// `null` or `{"m": message, "tb": traceback}`: the message, the traceback one click away.
    Error,
    /// `null` or a fraction from 0 to 1: a progress bar.
    Progress,
    /// `null` or a Unix time: the time left until then, counting down.
    Deadline,
}

impl Format {
    /// The name the script knows the format by.
    pub fn name(self) -> &'static str {
        match self {
            Self::Text => "text",
            Self::State => "state",
            Self::Count => "count",
            Self::Millis => "ms",
            Self::Bytes => "bytes",
            Self::Clock => "clock",
            Self::Spark => "spark",
            Self::Error => "error",
            Self::Progress => "progress",
            Self::Deadline => "deadline",
        }
    }
}

/// One column of a table.
#[derive(Debug, Clone, Copy)]
pub struct Column {
    /// The field name in updates (short: it is sent with every change).
    pub field: &'static str,
    /// The column's heading.
    pub title: &'static str,
    /// How its values are shown.
    pub format: Format,
}

impl Column {
    /// A column.
    pub const fn new(field: &'static str, title: &'static str, format: Format) -> Self {
        Self {
            field,
            title,
            format,
        }
    }
}

/// One table of a page.
#[derive(Debug, Clone)]
pub struct TableSpec {
    /// Its name in updates.
    pub name: &'static str,
    /// Its heading.
    pub title: &'static str,
    /// Shown when it has no row.
    pub empty: &'static str,
    /// Its columns.
    pub columns: Vec<Column>,
}

/// A page: a title and tables.
#[derive(Debug, Clone)]
pub struct PageSpec {
    /// The page's title.
    pub title: String,
    /// Its tables, in order.
    pub tables: Vec<TableSpec>,
}

impl PageSpec {
    /// The field names of table `name`, in column order.
    pub fn fields(&self, name: &str) -> Vec<&'static str> {
        self.tables
            .iter()
            .find(|t| t.name == name)
            .map(|t| t.columns.iter().map(|c| c.field).collect())
            .unwrap_or_default()
    }
}

/// What a page shows: the rows of its tables now.
pub trait PageSource: Send + Sync + 'static {
    /// Every table's rows, one cell per column.
    fn tables(&self) -> Vec<TableInput>;
}

/// A file built into the binary.
#[derive(Debug, Clone, Copy)]
pub struct Asset {
    /// Its name under `/assets/`.
    pub name: &'static str,
    /// Its content.
    pub body: &'static str,
    /// Its `Content-Type`.
    pub content_type: &'static str,
}

impl Asset {
    /// A strong `ETag` of the content (FNV-1a, 64 bits), quoted.
    pub fn etag(&self) -> String {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for b in self.body.bytes() {
            hash ^= u64::from(b);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        format!("\"{hash:016x}\"")
    }
}

/// The assets of every page.
pub const ASSETS: [Asset; 3] = [
    Asset {
        name: "page.js",
        body: include_str!("assets/page.js"),
        content_type: "text/javascript; charset=utf-8",
    },
    Asset {
        name: "page.css",
        body: include_str!("assets/page.css"),
        content_type: "text/css; charset=utf-8",
    },
    Asset {
        name: "icon.svg",
        body: include_str!("assets/icon.svg"),
        content_type: "image/svg+xml",
    },
];

/// Sets the security headers of a page's answers (see the [module docs](self)).
pub fn security_headers(headers: &mut HeaderMap) {
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
}

fn respond(status: StatusCode, content_type: &'static str, body: Body) -> Response {
    let mut response = (status, body).into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    security_headers(h);
    response
}

/// Answers `GET /assets/<name>`: the asset with its `ETag` and `Cache-Control: no-cache`
/// (the browser asks again each time, and gets 304 when it has it), or 404.
pub fn asset_response(name: &str, request: &HeaderMap) -> Response {
    let Some(asset) = ASSETS.iter().find(|a| a.name == name) else {
        return crate::ErrorResponse::new(
            outpost_types::ErrorCode::NotFound,
            format!("no asset {name}"),
        )
        .into_response();
    };
    let etag = asset.etag();
    let matches = request
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    let mut response = if matches {
        respond(StatusCode::NOT_MODIFIED, asset.content_type, Body::empty())
    } else {
        respond(StatusCode::OK, asset.content_type, Body::from(asset.body))
    };
    let h = response.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    response
}

/// The state of a page's routes.
struct PageState {
    spec: PageSpec,
    source: Arc<dyn PageSource>,
    delta: DeltaPage,
}

impl PageState {
    fn refresh(&self) {
        if self.delta.due() {
            self.delta.refresh(self.source.tables());
        }
    }

    fn delta(&self, since: Option<Version>) -> serde_json::Value {
        self.refresh();
        self.delta.delta(since, &|t| self.spec.fields(t))
    }
}

/// The `since` parameter of a query string.
fn since_of(uri: &Uri) -> Option<Version> {
    uri.query()?
        .split('&')
        .find_map(|p| p.strip_prefix("since="))
        .and_then(Version::parse)
}

async fn page(State(s): State<Arc<PageState>>) -> Response {
    let update = s.delta(None);
    let html = render_page(&s.spec, &update);
    respond(StatusCode::OK, "text/html; charset=utf-8", Body::from(html))
}

async fn asset(Path(name): Path<String>, headers: HeaderMap) -> Response {
    asset_response(&name, &headers)
}

fn json(value: &serde_json::Value) -> Response {
    let mut body = serde_json::to_vec(value).unwrap_or_default();
    body.push(b'\n');
    respond(StatusCode::OK, "application/json", Body::from(body))
}

async fn full(State(s): State<Arc<PageState>>) -> Response {
    json(&s.delta(None))
}

async fn updates(State(s): State<Arc<PageState>>, uri: Uri) -> Response {
    json(&s.delta(since_of(&uri)))
}

/// The routes of a status page (see the [module docs](self)), mounted at the root under the
/// module name `page`. The source is asked at most every `min_refresh` whatever the number of
/// pages polling.
pub fn routes(
    spec: PageSpec,
    source: Arc<dyn PageSource>,
    min_refresh: Duration,
) -> ReadOnlyRoutes {
    let state = Arc::new(PageState {
        spec,
        source,
        delta: DeltaPage::new(min_refresh),
    });
    ReadOnlyRoutes::root("page")
        .get("/", page)
        .get("/assets/{name}", asset)
        .get("/api/page", full)
        .get("/api/page/updates", updates)
        .with_state(state)
}

/// Builds a page's HTML and update state once, without a listener: what `GET /` answers
/// (for benchmarks and tests).
pub fn render_once(spec: &PageSpec, source: &dyn PageSource) -> String {
    let delta = DeltaPage::new(Duration::ZERO);
    delta.refresh(source.tables());
    render_page(spec, &delta.delta(None, &|t| spec.fields(t)))
}
