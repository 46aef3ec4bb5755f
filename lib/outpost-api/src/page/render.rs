//! The page's HTML, rendered on the server from a full update (the script renders a cell the
//! same way when it changes).

use std::fmt::Write as _;

use serde_json::Value;

use super::{Format, POLL_INTERVAL, PageSpec, TableSpec};

/// Escapes text for HTML content and quoted attribute values.
fn escape(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
}

const NONE: &str = "\u{2014}";

/// `12.3 ms` below a second, `1.23 s` above.
pub(crate) fn millis(x: f64) -> String {
    if x < 1000.0 {
        format!("{x:.1} ms")
    } else {
        format!("{:.2} s", x / 1000.0)
    }
}

/// `512 B`, `1.5 KiB`, `3.4 MiB`, `1.0 GiB`.
pub(crate) fn bytes(x: f64) -> String {
    const K: f64 = 1024.0;
    if x < K {
        format!("{x:.0} B")
    } else if x < K * K {
        format!("{:.1} KiB", x / K)
    } else if x < K * K * K {
        format!("{:.1} MiB", x / (K * K))
    } else {
        format!("{:.1} GiB", x / (K * K * K))
    }
}

/// The UTC time of day of a Unix time: `06:12:01`.
pub(crate) fn clock(unix: f64) -> String {
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let s = (unix.max(0.0).floor() as u64) % 86_400;
    format!("{:02}:{:02}:{:02}", s / 3600, s % 3600 / 60, s % 60)
}

/// Time left: `4m 05s`, `12s`, `1h 02m`; `0s` once past.
pub(crate) fn left(seconds: f64) -> String {
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let s = seconds.max(0.0).ceil() as u64;
    if s >= 3600 {
        format!("{}h {:02}m", s / 3600, s % 3600 / 60)
    } else if s >= 60 {
        format!("{}m {:02}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

fn cell(out: &mut String, format: Format, value: Option<&Value>, now: f64) {
    let value = value.unwrap_or(&Value::Null);
    match (format, value) {
        (Format::Spark, Value::Array(values)) => {
            // The values only: the script draws the line (the same drawing as for updates).
            out.push_str("<svg class=\"spark\" width=\"120\" height=\"24\" data-s=\"");
            for (i, v) in values.iter().filter_map(Value::as_f64).enumerate() {
                if i > 0 {
                    out.push(',');
                }
                let _ = write!(out, "{v}");
            }
            out.push_str("\"></svg>");
        }
        (Format::Error, Value::Object(e)) => {
            let message = e.get("m").and_then(Value::as_str).unwrap_or("");
            let traceback = e.get("tb").and_then(Value::as_str).unwrap_or("");
            if traceback.is_empty() {
                out.push_str("<span class=\"err\">");
                escape(out, message);
                out.push_str("</span>");
            } else {
                out.push_str("<details class=\"err\"><summary>");
                escape(out, message);
                out.push_str("</summary><pre>");
                escape(out, traceback);
                out.push_str("</pre></details>");
            }
        }
        (Format::Error | Format::Progress, Value::Null) => {}
        (Format::Deadline, Value::Null) | (_, Value::Null) => out.push_str(NONE),
        (Format::State, Value::String(s)) => {
            out.push_str("<span class=\"st st-");
            escape(out, &s.replace(' ', "-"));
            out.push_str("\">");
            escape(out, s);
            out.push_str("</span>");
        }
        (Format::Millis, v) if v.is_number() => escape(out, &millis(v.as_f64().unwrap_or(0.0))),
        (Format::Bytes, v) if v.is_number() => escape(out, &bytes(v.as_f64().unwrap_or(0.0))),
        (Format::Clock, v) if v.is_number() => escape(out, &clock(v.as_f64().unwrap_or(0.0))),
        (Format::Progress, v) if v.is_number() => {
            let f = v.as_f64().unwrap_or(0.0).clamp(0.0, 1.0);
            let _ = write!(
                out,
                "<progress max=\"1\" value=\"{f}\"></progress> {:.0}%",
                f * 100.0
            );
        }
        (Format::Deadline, v) if v.is_number() => {
            let at = v.as_f64().unwrap_or(0.0);
            let _ = write!(
                out,
                "<span class=\"left\" data-at=\"{at}\">{}</span>",
                left(at - now)
            );
        }
        (_, Value::String(s)) => escape(out, s),
        (_, Value::Number(n)) => escape(out, &n.to_string()),
        (_, Value::Bool(b)) => out.push_str(if *b { "yes" } else { "no" }),
        (_, other) => escape(out, &other.to_string()),
    }
}

fn table(out: &mut String, spec: &TableSpec, update: Option<&Value>, now: f64) {
    let rows = update
        .and_then(|t| t.get("rows"))
        .and_then(Value::as_array)
        .map_or(&[][..], Vec::as_slice);
    let _ = write!(out, "<section><h2>");
    escape(out, spec.title);
    let _ = write!(
        out,
        " <span class=\"count\" data-count=\"{}\">{}</span></h2><p class=\"empty\"{}>",
        spec.name,
        rows.len(),
        if rows.is_empty() { "" } else { " hidden" }
    );
    escape(out, spec.empty);
    let _ = write!(
        out,
        "</p><div class=\"scroll\"{}><table data-t=\"{}\"><thead><tr>",
        if rows.is_empty() { " hidden" } else { "" },
        spec.name
    );
    for c in &spec.columns {
        let _ = write!(
            out,
            "<th data-f=\"{}\" data-fmt=\"{}\">",
            c.field,
            c.format.name()
        );
        escape(out, c.title);
        out.push_str("</th>");
    }
    out.push_str("</tr></thead><tbody>");
    for row in rows {
        let (Some(index), Some(fields)) = (
            row.get(0).and_then(Value::as_u64),
            row.get(1).and_then(Value::as_object),
        ) else {
            continue;
        };
        let _ = write!(out, "<tr data-k=\"{index}\">");
        for c in &spec.columns {
            out.push_str("<td>");
            cell(out, c.format, fields.get(c.field), now);
            out.push_str("</td>");
        }
        out.push_str("</tr>");
    }
    out.push_str("</tbody></table></div></section>");
}

/// The page's HTML from a full update ([`DeltaPage::delta`](super::DeltaPage::delta) with no
/// version).
pub fn render_page(spec: &PageSpec, update: &Value) -> String {
    let version = update.get("v").and_then(Value::as_str).unwrap_or("0.0");
    let now = update.get("now").and_then(Value::as_f64).unwrap_or(0.0);
    let tables = update.get("tables");
    let mut out = String::with_capacity(64 * 1024);
    out.push_str("<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>");
    escape(&mut out, &spec.title);
    out.push_str("</title><link rel=\"icon\" href=\"/assets/icon.svg\"><link rel=\"stylesheet\" href=\"/assets/page.css\"><script src=\"/assets/page.js\" defer></script></head>\n");
    let _ = write!(
        out,
        "<body data-v=\"{}\" data-now=\"{now}\" data-poll=\"{}\"><header><h1>",
        version,
        POLL_INTERVAL.as_millis()
    );
    escape(&mut out, &spec.title);
    let _ = write!(
        out,
        "</h1><span id=\"live\" class=\"live\">as of {} UTC</span></header><main>",
        clock(now)
    );
    for t in &spec.tables {
        table(&mut out, t, tables.and_then(|u| u.get(t.name)), now);
    }
    out.push_str("</main></body></html>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(millis(12.34), "12.3 ms");
        assert_eq!(millis(1234.0), "1.23 s");
        assert_eq!(bytes(512.0), "512 B");
        assert_eq!(bytes(1536.0), "1.5 KiB");
        assert_eq!(bytes(3.5 * 1024.0 * 1024.0), "3.5 MiB");
        assert_eq!(
            clock(86_400.0 + 3600.0 * 6.0 + 12.0 * 60.0 + 1.5),
            "06:12:01"
        );
        assert_eq!(left(245.0), "4m 05s");
        assert_eq!(left(-3.0), "0s");
        assert_eq!(left(3720.0), "1h 02m");
    }

    #[test]
    fn escapes() {
        let mut s = String::new();
        escape(&mut s, "<script>\"a\" & 'b'</script>");
        assert_eq!(
            s,
            "&lt;script&gt;&quot;a&quot; &amp; &#39;b&#39;&lt;/script&gt;"
        );
    }
}
