//! The update channel of a status page: every table's rows and their fields, each field
//! stamped with the generation it last changed in, so that a page that knows version `E.G`
//! receives only what changed after it.
//!
//! * A version is `<epoch>.<generation>`: the epoch is fixed when the [`DeltaPage`] is made
//!   (a restarted process has another one), the generation grows by one at each refresh that
//!   changed anything.
//! * A row is known by a small number (its index, given when the row first appears and never
//!   reused within an epoch). A row the page does not know yet comes with all its fields; a
//!   row it knows comes with the fields that changed only; a row gone comes as its index in
//!   `gone`.
//! * A series cell (a sparkline) sends the values appended since the version, not the whole
//!   series.
//! * A version from another epoch, from the future, or older than the oldest removal still
//!   remembered, gets a full answer (`"full": true`): the page starts over from it.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use serde_json::{Map, Value};

/// Values kept per series cell.
pub const SERIES_LEN: usize = 60;

/// Removals remembered; a page further behind than this many removals is sent everything.
const GONE_KEPT: usize = 4096;

/// One cell of a row as the page's source gives it.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    /// A value, sent whole when it changes.
    Value(Value),
    /// A series of numbers (run durations): `total` values were ever appended, `tail` holds
    /// the last ones (oldest first). Only the values appended since a version are sent.
    Series {
        /// Values ever appended.
        total: u64,
        /// The last values, oldest first.
        tail: Vec<f64>,
    },
}

impl From<Value> for Cell {
    fn from(v: Value) -> Self {
        Self::Value(v)
    }
}

/// One row as the page's source gives it: a key unique within its table and one cell per
/// column of the table, in the columns' order.
#[derive(Debug, Clone, PartialEq)]
pub struct RowInput {
    /// Unique within the table (a check ID, a package name).
    pub key: String,
    /// One per column.
    pub cells: Vec<Cell>,
}

/// One table's rows, in display order.
#[derive(Debug, Clone, PartialEq)]
pub struct TableInput {
    /// The table's name (as in its [`TableSpec`](super::TableSpec)).
    pub name: &'static str,
    /// Its rows.
    pub rows: Vec<RowInput>,
}

/// A version a page holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Version {
    /// The [`DeltaPage`]'s epoch.
    pub epoch: u64,
    /// The generation.
    pub generation: u64,
}

impl Version {
    /// Parses `<epoch>.<generation>`; `None` for anything else.
    pub fn parse(s: &str) -> Option<Self> {
        let (e, g) = s.split_once('.')?;
        Some(Self {
            epoch: e.parse().ok()?,
            generation: g.parse().ok()?,
        })
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.epoch, self.generation)
    }
}

#[derive(Debug)]
enum Stored {
    Value(Value, u64),
    Series {
        total: u64,
        /// (generation it arrived in, value), oldest first.
        values: VecDeque<(u64, f64)>,
    },
}

#[derive(Debug)]
struct Row {
    index: u64,
    added: u64,
    cells: Vec<Stored>,
}

#[derive(Debug, Default)]
struct Table {
    rows: HashMap<String, Row>,
    /// Display order (keys).
    order: Vec<String>,
    /// (generation, index) of removed rows, oldest first.
    gone: VecDeque<(u64, u64)>,
}

#[derive(Debug)]
struct State {
    generation: u64,
    next_index: u64,
    /// Versions older than this lost removals: they get a full answer.
    forgotten_before: u64,
    tables: Vec<(&'static str, Table)>,
    refreshed: Option<Instant>,
}

/// The rows of a page and what changed when (see the [module docs](self)).
#[derive(Debug)]
pub struct DeltaPage {
    epoch: u64,
    min_refresh: Duration,
    state: Mutex<State>,
}

/// Rounds to one decimal: what the page shows, and fewer bytes on the wire.
pub fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

fn number(x: f64) -> Value {
    serde_json::Number::from_f64(round1(x)).map_or(Value::Null, Value::Number)
}

impl DeltaPage {
    /// An empty page whose source is asked again at most every `min_refresh` (however many
    /// pages poll it).
    pub fn new(min_refresh: Duration) -> Self {
        let epoch = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(1, |d| d.as_millis())
            .try_into()
            .unwrap_or(u64::MAX);
        Self {
            epoch,
            min_refresh,
            state: Mutex::new(State {
                generation: 0,
                next_index: 0,
                forgotten_before: 0,
                tables: Vec::new(),
                refreshed: None,
            }),
        }
    }

    /// The current version.
    pub fn version(&self) -> Version {
        Version {
            epoch: self.epoch,
            generation: self.lock().generation,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether the last refresh is older than the minimum interval (a caller that is about to
    /// build its input can skip it otherwise).
    pub fn due(&self) -> bool {
        self.lock()
            .refreshed
            .is_none_or(|t| t.elapsed() >= self.min_refresh)
    }

    /// Takes the source's current rows: compares them with what is stored and stamps what
    /// changed with a new generation (only if anything did).
    pub fn refresh(&self, tables: Vec<TableInput>) {
        let mut guard = self.lock();
        let state = &mut *guard;
        state.refreshed = Some(Instant::now());
        let next = state.generation + 1;
        let mut changed = false;
        for input in tables {
            let position = state.tables.iter().position(|(n, _)| *n == input.name);
            let position = position.unwrap_or_else(|| {
                state.tables.push((input.name, Table::default()));
                state.tables.len() - 1
            });
            let table = &mut state.tables[position].1;
            let mut order = Vec::with_capacity(input.rows.len());
            let mut seen: HashSet<String> = HashSet::with_capacity(input.rows.len());
            for row in input.rows {
                if !seen.insert(row.key.clone()) {
                    continue; // a duplicate key: the first one counts
                }
                order.push(row.key.clone());
                match table.rows.get_mut(&row.key) {
                    Some(stored) => changed |= update_row(stored, row.cells, next),
                    None => {
                        let index = state.next_index;
                        state.next_index += 1;
                        let cells = row.cells.into_iter().map(|c| new_cell(c, next)).collect();
                        table.rows.insert(
                            row.key,
                            Row {
                                index,
                                added: next,
                                cells,
                            },
                        );
                        changed = true;
                    }
                }
            }
            let before = table.rows.len();
            let mut removed = Vec::new();
            table.rows.retain(|k, r| {
                let keep = seen.contains(k);
                if !keep {
                    removed.push(r.index);
                }
                keep
            });
            if table.rows.len() != before {
                changed = true;
            }
            for index in removed {
                table.gone.push_back((next, index));
            }
            while table.gone.len() > GONE_KEPT {
                if let Some((generation, _)) = table.gone.pop_front() {
                    state.forgotten_before = state.forgotten_before.max(generation);
                }
            }
            if order != table.order {
                table.order = order;
                changed = true;
            }
        }
        if changed {
            state.generation = next;
        }
    }

    /// What a page holding `since` needs to be current: a JSON object
    /// `{"v": version, "full": bool, "now": unix seconds, "tables": {name: {"rows": [[index,
    /// {field: value}]...], "gone": [index...]}}}`. `fields[t]` names the columns of table
    /// `t` (its [`TableSpec`](super::TableSpec)'s fields). Rows the page knows and that did
    /// not change are left out; with `full`, every row is there, in display order.
    pub fn delta(
        &self,
        since: Option<Version>,
        fields: &dyn Fn(&str) -> Vec<&'static str>,
    ) -> Value {
        let state = self.lock();
        let since = since
            .filter(|v| {
                v.epoch == self.epoch
                    && v.generation <= state.generation
                    && v.generation >= state.forgotten_before
            })
            .map(|v| v.generation);
        let mut tables = Map::new();
        for (name, table) in &state.tables {
            let names = fields(name);
            let mut rows = Vec::new();
            for key in &table.order {
                let Some(row) = table.rows.get(key) else {
                    continue;
                };
                let known = since.filter(|g| row.added <= *g);
                let mut out = Map::new();
                for (cell, field) in row.cells.iter().zip(&names) {
                    match (cell, known) {
                        (Stored::Value(_, changed), Some(g)) if *changed <= g => {}
                        (Stored::Value(v, _), _) => {
                            out.insert((*field).to_owned(), v.clone());
                        }
                        (Stored::Series { values, .. }, g) => {
                            let new: Vec<Value> = values
                                .iter()
                                .filter(|(at, _)| g.is_none_or(|g| *at > g))
                                .map(|(_, x)| number(*x))
                                .collect();
                            if !new.is_empty() || g.is_none() {
                                out.insert((*field).to_owned(), Value::Array(new));
                            }
                        }
                    }
                }
                if known.is_none() || !out.is_empty() {
                    rows.push(Value::Array(vec![row.index.into(), Value::Object(out)]));
                }
            }
            let gone: Vec<Value> = match since {
                Some(g) => table
                    .gone
                    .iter()
                    .filter(|(at, _)| *at > g)
                    .map(|(_, i)| (*i).into())
                    .collect(),
                None => Vec::new(),
            };
            let mut t = Map::new();
            t.insert("rows".into(), Value::Array(rows));
            t.insert("gone".into(), Value::Array(gone));
            if order_changed(table, since) {
                // The display order, so that rows added by a reload land in their place.
                let order: Vec<Value> = table
                    .order
                    .iter()
                    .filter_map(|k| table.rows.get(k).map(|r| r.index.into()))
                    .collect();
                t.insert("order".into(), Value::Array(order));
            }
            tables.insert((*name).to_owned(), Value::Object(t));
        }
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        let mut out = Map::new();
        out.insert(
            "v".into(),
            Value::String(
                Version {
                    epoch: self.epoch,
                    generation: state.generation,
                }
                .to_string(),
            ),
        );
        out.insert("full".into(), Value::Bool(since.is_none()));
        out.insert("now".into(), number(now));
        out.insert("tables".into(), Value::Object(tables));
        Value::Object(out)
    }
}

/// Whether rows were added or removed after `since` (the only ways the order changes that a
/// page must hear about; a page appends new rows, so it needs the order then).
fn order_changed(table: &Table, since: Option<u64>) -> bool {
    let Some(g) = since else { return true };
    table.rows.values().any(|r| r.added > g) || table.gone.iter().any(|(at, _)| *at > g)
}

fn new_cell(cell: Cell, generation: u64) -> Stored {
    match cell {
        Cell::Value(v) => Stored::Value(v, generation),
        Cell::Series { total, tail } => Stored::Series {
            total,
            values: tail
                .iter()
                .rev()
                .take(SERIES_LEN)
                .rev()
                .map(|x| (generation, *x))
                .collect(),
        },
    }
}

fn update_row(row: &mut Row, cells: Vec<Cell>, generation: u64) -> bool {
    let mut changed = false;
    for (i, cell) in cells.into_iter().enumerate() {
        let Some(stored) = row.cells.get_mut(i) else {
            row.cells.push(new_cell(cell, generation));
            changed = true;
            continue;
        };
        match (stored, cell) {
            (Stored::Value(old, at), Cell::Value(v)) => {
                if *old != v {
                    *old = v;
                    *at = generation;
                    changed = true;
                }
            }
            (Stored::Series { total, values }, Cell::Series { total: t, tail }) => {
                if t < *total {
                    // Started over (the instance was restarted): keep what it has now.
                    *total = 0;
                    values.clear();
                }
                let fresh = usize::try_from(t - *total)
                    .unwrap_or(usize::MAX)
                    .min(tail.len());
                if fresh > 0 {
                    for x in &tail[tail.len() - fresh..] {
                        values.push_back((generation, *x));
                    }
                    while values.len() > SERIES_LEN {
                        values.pop_front();
                    }
                    changed = true;
                }
                *total = t;
            }
            (stored, cell) => {
                *stored = new_cell(cell, generation);
                changed = true;
            }
        }
    }
    changed
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn row(key: &str, state: &str, total: u64, tail: &[f64]) -> RowInput {
        RowInput {
            key: key.into(),
            cells: vec![
                Cell::Value(json!(key)),
                Cell::Value(json!(state)),
                Cell::Series {
                    total,
                    tail: tail.to_vec(),
                },
            ],
        }
    }

    fn fields(_: &str) -> Vec<&'static str> {
        vec!["c", "st", "s"]
    }

    fn table(rows: Vec<RowInput>) -> Vec<TableInput> {
        vec![TableInput { name: "t", rows }]
    }

    #[test]
    fn sends_only_what_changed() {
        let page = DeltaPage::new(Duration::ZERO);
        page.refresh(table(vec![
            row("a", "ok", 1, &[1.0]),
            row("b", "ok", 1, &[2.0]),
        ]));
        let full = page.delta(None, &fields);
        assert_eq!(full["full"], json!(true));
        assert_eq!(
            full["tables"]["t"]["rows"],
            json!([[0, {"c": "a", "st": "ok", "s": [1.0]}], [1, {"c": "b", "st": "ok", "s": [2.0]}]])
        );
        let v1 = page.version();

        // Nothing changed: no new generation, an empty delta.
        page.refresh(table(vec![
            row("a", "ok", 1, &[1.0]),
            row("b", "ok", 1, &[2.0]),
        ]));
        assert_eq!(page.version(), v1);
        let none = page.delta(Some(v1), &fields);
        assert_eq!(none["full"], json!(false));
        assert_eq!(none["tables"]["t"]["rows"], json!([]));
        assert!(none["tables"]["t"].get("order").is_none());

        // b ran twice and failed: its state and its two new durations, not its name.
        page.refresh(table(vec![
            row("a", "ok", 1, &[1.0]),
            row("b", "error", 3, &[2.0, 3.0, 4.04]),
        ]));
        let d = page.delta(Some(v1), &fields);
        assert_eq!(
            d["tables"]["t"]["rows"],
            json!([[1, {"st": "error", "s": [3.0, 4.0]}]])
        );
        let v2 = Version::parse(d["v"].as_str().unwrap()).unwrap();
        assert_eq!(v2.generation, v1.generation + 1);

        // a goes, c comes whole, with the new order.
        page.refresh(table(vec![
            row("c", "ok", 0, &[]),
            row("b", "error", 3, &[2.0, 3.0, 4.0]),
        ]));
        let d = page.delta(Some(v2), &fields);
        assert_eq!(d["tables"]["t"]["gone"], json!([0]));
        assert_eq!(
            d["tables"]["t"]["rows"],
            json!([[2, {"c": "c", "st": "ok", "s": []}]])
        );
        assert_eq!(d["tables"]["t"]["order"], json!([2, 1]));
        // From v1, b's changes and the removal both show.
        let d = page.delta(Some(v1), &fields);
        assert_eq!(d["tables"]["t"]["gone"], json!([0]));
        assert_eq!(d["tables"]["t"]["rows"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn unknown_versions_get_everything() {
        let page = DeltaPage::new(Duration::ZERO);
        page.refresh(table(vec![row("a", "ok", 1, &[1.0])]));
        let v = page.version();
        for since in [
            Version {
                epoch: v.epoch + 1,
                generation: v.generation,
            },
            Version {
                epoch: v.epoch,
                generation: v.generation + 5,
            },
        ] {
            let d = page.delta(Some(since), &fields);
            assert_eq!(d["full"], json!(true), "{since}");
            assert_eq!(d["tables"]["t"]["rows"].as_array().unwrap().len(), 1);
        }
        assert_eq!(
            Version::parse("12.3"),
            Some(Version {
                epoch: 12,
                generation: 3
            })
        );
        assert_eq!(Version::parse("12"), None);
        assert_eq!(Version::parse("x.3"), None);
    }

    #[test]
    fn series_keep_the_last_values() {
        let page = DeltaPage::new(Duration::ZERO);
        page.refresh(table(vec![row("a", "ok", 0, &[])]));
        let v = page.version();
        let tail: Vec<f64> = (0..100).map(f64::from).collect();
        page.refresh(table(vec![row("a", "ok", 100, &tail)]));
        let d = page.delta(Some(v), &fields);
        let s = d["tables"]["t"]["rows"][0][1]["s"]
            .as_array()
            .unwrap()
            .clone();
        assert_eq!(s.len(), SERIES_LEN);
        assert_eq!(s.last(), Some(&json!(99.0)));
        // A restarted counter starts over.
        page.refresh(table(vec![row("a", "ok", 1, &[7.0])]));
        let d = page.delta(None, &fields);
        assert_eq!(d["tables"]["t"]["rows"][0][1]["s"], json!([7.0]));
    }
}
