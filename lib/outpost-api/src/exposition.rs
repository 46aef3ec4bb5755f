//! Serving an exposition as Prometheus text 0.0.4 or OpenMetrics 1.0.0, as the scraper asks.
//!
//! [`Format::negotiate`] reads the `Accept` header: OpenMetrics is chosen when
//! `application/openmetrics-text` (version absent, `1.0.0` or `0.0.1`) has a non-zero `q` at
//! least as high as that of the text format (`text/plain`, `text/*`, `*/*`); anything else,
//! no header included, gets the text format.
//!
//! [`to_openmetrics`] rewrites a 0.0.4 exposition (as [`crate::Telemetry::render`] and the
//! agent write it: `# HELP` right before `# TYPE`, samples of a family after its `# TYPE`):
//! * a counter family `x_total` is declared as `x` and its samples keep `x_total`; a counter
//!   family `x` is declared as `x` and its samples become `x_total`;
//! * `"` in help text is escaped (`\"`), as OpenMetrics requires;
//! * a family whose OpenMetrics name was already declared (a counter `x_total` beside a
//!   gauge `x`) is left out, samples and all, since a family may appear only once;
//! * the text ends with `# EOF`.

use axum::body::Body;
use axum::response::{IntoResponse as _, Response};
use http::{HeaderMap, HeaderValue, header};
use std::collections::HashSet;

/// `Content-Type` of the text format 0.0.4.
pub const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
/// `Content-Type` of OpenMetrics 1.0.0.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// An exposition format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Prometheus text 0.0.4.
    Text,
    /// OpenMetrics 1.0.0.
    OpenMetrics,
}

impl Format {
    /// The format the request's `Accept` header prefers (see the [module docs](self)).
    pub fn negotiate(headers: &HeaderMap) -> Self {
        let mut best_text = 0.0_f64;
        let mut best_om = 0.0_f64;
        let mut any = false;
        for value in headers.get_all(header::ACCEPT) {
            let Ok(value) = value.to_str() else { continue };
            for range in value.split(',') {
                let mut parts = range.split(';');
                let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
                if media.is_empty() {
                    continue;
                }
                any = true;
                let mut q = 1.0;
                let mut version: Option<String> = None;
                for param in parts {
                    let Some((k, v)) = param.split_once('=') else {
                        continue;
                    };
                    let v = v.trim().trim_matches('"');
                    match k.trim().to_ascii_lowercase().as_str() {
                        "q" => {
                            q = v
                                .parse::<f64>()
                                .ok()
                                .filter(|q| q.is_finite())
                                .unwrap_or(0.0)
                        }
                        "version" => version = Some(v.to_owned()),
                        _ => {}
                    }
                }
                match media.as_str() {
                    "application/openmetrics-text"
                        if version
                            .as_deref()
                            .is_none_or(|v| v == "1.0.0" || v == "0.0.1") =>
                    {
                        best_om = best_om.max(q);
                    }
                    "text/plain" | "text/*" | "*/*" => best_text = best_text.max(q),
                    _ => {}
                }
            }
        }
        if any && best_om > 0.0 && best_om >= best_text {
            Self::OpenMetrics
        } else {
            Self::Text
        }
    }

    /// The `Content-Type` of the format.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Text => TEXT_CONTENT_TYPE,
            Self::OpenMetrics => OPENMETRICS_CONTENT_TYPE,
        }
    }
}

/// Answers a text 0.0.4 exposition in the format `headers` ask for.
pub fn respond(headers: &HeaderMap, text: String) -> Response {
    let format = Format::negotiate(headers);
    let body = match format {
        Format::Text => text,
        Format::OpenMetrics => to_openmetrics(&text),
    };
    let mut response = Body::from(body).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(format.content_type()),
    );
    response
}

/// The metric name of a sample line (up to `{` or a space).
fn sample_name(line: &str) -> &str {
    let end = line.find(['{', ' ']).unwrap_or(line.len());
    &line[..end]
}

/// Rewrites a text 0.0.4 exposition as OpenMetrics 1.0.0 (see the [module docs](self)).
pub fn to_openmetrics(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + text.len() / 16 + 16);
    let mut declared: HashSet<&str> = HashSet::new();
    let mut help: Option<(&str, &str)> = None;
    // The family being written: its 0.0.4 name, whether its samples need `_total`, whether
    // it is left out.
    let mut family: Option<(&str, bool)> = None;
    let mut skip = false;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            help = rest.split_once(' ');
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let Some((name, kind)) = rest.split_once(' ') else {
                continue;
            };
            let counter = kind == "counter";
            let om_name = if counter {
                name.strip_suffix("_total").unwrap_or(name)
            } else {
                name
            };
            skip = !declared.insert(om_name);
            family = Some((name, counter && !name.ends_with("_total")));
            if !skip {
                if let Some((help_name, help_text)) = help
                    && help_name == name
                {
                    out.push_str("# HELP ");
                    out.push_str(om_name);
                    out.push(' ');
                    for c in help_text.chars() {
                        if c == '"' {
                            out.push_str("\\\"");
                        } else {
                            out.push(c);
                        }
                    }
                    out.push('\n');
                }
                out.push_str("# TYPE ");
                out.push_str(om_name);
                out.push(' ');
                out.push_str(kind);
                out.push('\n');
            }
            help = None;
            continue;
        }
        if line.is_empty() || line.starts_with('#') || skip {
            continue;
        }
        match family {
            Some((name, true)) if sample_name(line) == name => {
                out.push_str(name);
                out.push_str("_total");
                out.push_str(&line[name.len()..]);
            }
            _ => out.push_str(line),
        }
        out.push('\n');
    }
    out.push_str("# EOF\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT, HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn negotiation_follows_the_q_values() {
        assert_eq!(Format::negotiate(&HeaderMap::new()), Format::Text);
        assert_eq!(Format::negotiate(&accept("*/*")), Format::Text);
        assert_eq!(Format::negotiate(&accept("text/plain")), Format::Text);
        // What Prometheus sends.
        assert_eq!(
            Format::negotiate(&accept(
                "application/openmetrics-text;version=1.0.0;q=0.5,application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2"
            )),
            Format::OpenMetrics
        );
        assert_eq!(
            Format::negotiate(&accept("application/openmetrics-text")),
            Format::OpenMetrics
        );
        assert_eq!(
            Format::negotiate(&accept(
                "application/openmetrics-text;q=0.2, text/plain;q=0.9"
            )),
            Format::Text
        );
        assert_eq!(
            Format::negotiate(&accept("application/openmetrics-text; version=2.0.0")),
            Format::Text
        );
        assert_eq!(
            Format::negotiate(&accept("application/openmetrics-text;q=0")),
            Format::Text
        );
        assert_eq!(
            Format::negotiate(&accept("application/openmetrics-text;q=nonsense")),
            Format::Text
        );
    }

    #[test]
    fn counters_get_total_help_is_escaped_and_eof_ends() {
        let text = "# HELP a_total Requests \"served\".\n# TYPE a_total counter\n\
                    a_total{k=\"v\"} 3\n\
                    # TYPE b counter\nb 1\nb{x=\"b 2\"} 2\n\
                    # TYPE g gauge\ng 1\n\
                    # TYPE h histogram\nh_bucket{le=\"+Inf\"} 1\nh_count 1\n\
                    # TYPE s summary\ns_sum 2\ns_count 1\n";
        assert_eq!(
            to_openmetrics(text),
            "# HELP a Requests \\\"served\\\".\n# TYPE a counter\na_total{k=\"v\"} 3\n\
             # TYPE b counter\nb_total 1\nb_total{x=\"b 2\"} 2\n\
             # TYPE g gauge\ng 1\n\
             # TYPE h histogram\nh_bucket{le=\"+Inf\"} 1\nh_count 1\n\
             # TYPE s summary\ns_sum 2\ns_count 1\n# EOF\n"
        );
    }

    #[test]
    fn a_family_declared_twice_is_left_out() {
        let text = "# TYPE x gauge\nx 1\n# TYPE x_total counter\nx_total 2\n# TYPE y gauge\ny 3\n";
        assert_eq!(
            to_openmetrics(text),
            "# TYPE x gauge\nx 1\n# TYPE y gauge\ny 3\n# EOF\n"
        );
        assert_eq!(to_openmetrics(""), "# EOF\n");
    }
}
