//! Writing the Prometheus text exposition format 0.0.4, with one `# TYPE` per family even when
//! several sources contribute (the API's registry, the agent's own series, the checks').

use std::collections::HashSet;

use outpost_api::Telemetry;
use outpost_api::telemetry::{escape_help, push_label, write_sample};

/// The `a="x",b="y"` form of label pairs given in order (names must already be valid).
pub(crate) fn labels(pairs: &[(&str, &str)]) -> String {
    let mut out = String::new();
    for (k, v) in pairs {
        push_label(&mut out, k, v);
    }
    out
}

/// An exposition being assembled.
#[derive(Debug, Default)]
pub(crate) struct Exposition {
    out: String,
    families: HashSet<String>,
}

impl Exposition {
    pub(crate) fn with_capacity(bytes: usize) -> Self {
        Self {
            out: String::with_capacity(bytes),
            families: HashSet::new(),
        }
    }

    /// Appends every family of a telemetry registry, remembering their names as they are
    /// written (the text is never read back).
    pub(crate) fn append_telemetry(&mut self, telemetry: &Telemetry) {
        let families = &mut self.families;
        telemetry.render_into(&mut self.out, |name| {
            families.insert(name.to_owned());
        });
    }

    /// True when a family of this name was written.
    #[cfg(test)]
    pub(crate) fn has_family(&self, name: &str) -> bool {
        self.families.contains(name)
    }

    /// Starts a family. Returns false (and writes nothing) when a family of that name was
    /// already written: its samples must then be left out.
    pub(crate) fn family(&mut self, name: &str, kind: &str, help: &str) -> bool {
        if !self.families.insert(name.to_owned()) {
            return false;
        }
        if !help.is_empty() {
            self.out.push_str("# HELP ");
            self.out.push_str(name);
            self.out.push(' ');
            escape_help(help, &mut self.out);
            self.out.push('\n');
        }
        self.out.push_str("# TYPE ");
        self.out.push_str(name);
        self.out.push(' ');
        self.out.push_str(kind);
        self.out.push('\n');
        true
    }

    /// Writes `name<suffix>{labels[,le="…"]} value`.
    pub(crate) fn sample(
        &mut self,
        name: &str,
        suffix: &str,
        labels: &str,
        le: Option<f64>,
        value: f64,
    ) {
        write_sample(&mut self.out, name, suffix, labels, le, value);
    }

    pub(crate) fn finish(self) -> String {
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_type_line_per_family() {
        let api = Telemetry::new();
        api.add_counter("api_total", &[("a", "1")], 2.0).unwrap();
        let mut e = Exposition::default();
        e.append_telemetry(&api);
        assert!(e.has_family("api_total"));
        assert!(!e.family("api_total", "gauge", ""));
        assert!(e.family("x", "gauge", "Help \\ with\nnewline"));
        e.sample("x", "", &labels(&[("k", "a\"b\\c\nd")]), None, f64::NAN);
        e.sample("h", "_bucket", "", Some(f64::INFINITY), 3.0);
        e.sample("h", "_bucket", "k=\"v\"", Some(0.5), -0.0);
        assert_eq!(
            e.finish(),
            "# TYPE api_total counter\napi_total{a=\"1\"} 2\n\
             # HELP x Help \\\\ with\\nnewline\n# TYPE x gauge\n\
             x{k=\"a\\\"b\\\\c\\nd\"} NaN\n\
             h_bucket{le=\"+Inf\"} 3\n\
             h_bucket{k=\"v\",le=\"0.5\"} -0\n"
        );
    }
}
