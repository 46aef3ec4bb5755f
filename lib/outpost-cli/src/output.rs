//! What commands print on stdout: JSON documents and aligned tables.
//!
//! A stdout that is closed or full is not worth failing a command over: what could not be
//! written is dropped (and one-shot commands die quietly of SIGPIPE, see
//! [`crate::process::restore_sigpipe`]).

use std::fmt::Write as _;
use std::io::{IsTerminal as _, Write as _};

/// Prints `value` as one JSON document on stdout, the one formatting of every command's
/// `--json`: indented when stdout is a terminal, one compact line otherwise (for pipes and
/// scripts, one document per line).
pub fn print_json(value: &impl serde::Serialize) {
    let encoded = if std::io::stdout().is_terminal() {
        serde_json::to_string_pretty(value)
    } else {
        serde_json::to_string(value)
    };
    match encoded {
        Ok(text) => print_stdout(&format!("{text}\n")),
        // Our output types always serialise; if one ever did not, say so instead of nothing.
        Err(e) => eprintln!("error: cannot encode the output as JSON: {e}"),
    }
}

/// Same as [`print_json`] (kept for the commands that print one document per result).
pub fn print_json_line(value: &impl serde::Serialize) {
    print_json(value);
}

/// The error document of `--json`, the API's shape: `{"error": {"message", "code"}}`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ErrorDocument {
    /// The error.
    pub error: ErrorFields,
}

/// The fields of [`ErrorDocument`].
#[derive(Debug, Clone, serde::Serialize)]
pub struct ErrorFields {
    /// What went wrong, for people (the same text as on stderr, without `error ...:`).
    pub message: String,
    /// What went wrong, for machines: the API's codes (`invalid_state`, ...) for API errors,
    /// and for failures of the command line itself `not_reachable`, `permission_denied`,
    /// `protocol`, `invalid_input`, `local`.
    pub code: String,
}

/// Prints the `--json` error document for a failure of the command itself on stdout.
pub fn print_error_json(code: &str, message: &str) {
    print_json(&ErrorDocument {
        error: ErrorFields {
            message: message.to_string(),
            code: code.to_string(),
        },
    });
}

/// Writes `text` as it is on stdout.
pub fn print_stdout(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
}

/// Appends `header` and `rows` to `out` as aligned columns, each line starting with `indent`:
/// every column but the last is padded to its widest cell (counted in characters) plus two
/// spaces; trailing spaces are trimmed. Cells beyond the header's count are left out.
pub fn table<R: AsRef<[String]>>(out: &mut String, indent: &str, header: &[&str], rows: &[R]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row.as_ref()) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut l = String::from(indent);
        for (i, (cell, w)) in cells.zip(&widths).enumerate() {
            if i + 1 == widths.len() {
                l.push_str(cell);
            } else {
                let _ = write!(l, "{cell:<w$}  ");
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(&mut header.iter().copied());
    for row in rows {
        line(&mut row.as_ref().iter().map(String::as_str));
    }
}

/// Prints `header` and `rows` as an aligned table on stdout (see [`table`]).
pub fn print_table<R: AsRef<[String]>>(header: &[&str], rows: &[R]) {
    let mut out = String::new();
    table(&mut out, "", header, rows);
    print_stdout(&out);
}

#[cfg(test)]
mod tests {
    use super::table;

    #[test]
    fn columns_align_on_the_widest_cell_and_the_last_is_not_padded() {
        let rows = [
            ["a".to_owned(), "long value".to_owned(), "x".to_owned()],
            ["wider-name".to_owned(), "v".to_owned(), String::new()],
        ];
        let mut out = String::new();
        table(&mut out, "  ", &["NAME", "VALUE", "LAST"], &rows);
        assert_eq!(
            out,
            "  NAME        VALUE       LAST\n  \
               a           long value  x\n  \
               wider-name  v\n"
        );
    }

    #[test]
    fn cells_are_counted_in_characters_and_extra_cells_are_dropped() {
        let rows = [vec!["é".to_owned(), "1".to_owned(), "extra".to_owned()]];
        let mut out = String::new();
        table(&mut out, "", &["K", "V"], &rows);
        assert_eq!(out, "K  V\né  1\n");
    }
}
