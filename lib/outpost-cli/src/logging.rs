//! Logging to stderr with `tracing`: text or JSON lines; the level comes from `-v`/`-q`,
//! overridden by `OUTPOST_LOG` (an `EnvFilter` directive such as `outpost_daemon=debug`).
//!
//! The API's per-request span (`api.request`, with method, route, module and status) is
//! recorded only at debug level and finer, or when `OUTPOST_LOG` is set: at info level it
//! adds nothing to the lines people read (mutations and operations log their caller, package
//! and outcome themselves), and formatting its fields for every request was the largest cost
//! of answering `GET /status`.

use tracing_subscriber::filter::{FilterExt as _, filter_fn};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer as _, Registry};

use crate::args::{GlobalArgs, LogFormat};

/// The span `outpost-api` opens around each request.
const REQUEST_SPAN: &str = "api.request";

/// The level `verbose` steps of `-v` above `default`, less `quiet` steps of `-q`, within
/// `error..=trace`.
pub fn level(default: tracing::Level, verbose: u8, quiet: u8) -> tracing::Level {
    const LEVELS: [tracing::Level; 5] = [
        tracing::Level::ERROR,
        tracing::Level::WARN,
        tracing::Level::INFO,
        tracing::Level::DEBUG,
        tracing::Level::TRACE,
    ];
    let base = LEVELS.iter().position(|l| *l == default).unwrap_or(2);
    let index = (base + usize::from(verbose))
        .saturating_sub(usize::from(quiet))
        .min(LEVELS.len() - 1);
    LEVELS[index]
}

/// Installs the global subscriber. `verbose`/`quiet` are the counts of `-v`/`-q`; `default`
/// is the level with neither. A second call keeps the first subscriber.
pub fn init(format: LogFormat, verbose: u8, quiet: u8, default: tracing::Level) {
    let level = level(default, verbose, quiet);
    let (filter, explicit) = match std::env::var("OUTPOST_LOG") {
        Ok(directives) if !directives.is_empty() => (EnvFilter::new(directives), true),
        _ => (EnvFilter::new(level.as_str()), false),
    };
    let keep_request_spans = explicit || level >= tracing::Level::DEBUG;
    let spans = filter_fn(move |meta| {
        keep_request_spans || !(meta.is_span() && meta.name() == REQUEST_SPAN)
    });
    let layer = match format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_filter(filter.and(spans))
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_writer(std::io::stderr)
            .with_filter(filter.and(spans))
            .boxed(),
    };
    // A second initialisation (tests) keeps the first subscriber, which is fine.
    let _ = Registry::default().with(layer).try_init();
}

/// Installs the stderr log of a one-shot command: `-v`/`-q` around `warn`, text lines. With
/// `OUTPOST_LOG` set, [`init`] (an `EnvFilter`) serves the directives; otherwise a plain level
/// filter does the same job without compiling the filter's regular expressions, which would
/// cost `outpost-agent`, whose resident memory is budgeted against plain Python's, about
/// 0.8 MiB. A second call keeps the first subscriber.
pub fn init_for_command(global: &GlobalArgs) {
    if std::env::var_os("OUTPOST_LOG").is_some_and(|v| !v.is_empty()) {
        init(
            LogFormat::Text,
            global.verbose,
            global.quiet,
            tracing::Level::WARN,
        );
        return;
    }
    let level = level(tracing::Level::WARN, global.verbose, global.quiet);
    // A second initialisation (tests) keeps the first subscriber, which is fine.
    let _ = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::level;
    use tracing::Level;

    #[test]
    fn verbosity_steps_from_the_default_and_stays_in_range() {
        assert_eq!(level(Level::INFO, 0, 0), Level::INFO);
        assert_eq!(level(Level::INFO, 1, 0), Level::DEBUG);
        assert_eq!(level(Level::WARN, 1, 0), Level::INFO);
        assert_eq!(level(Level::WARN, 0, 1), Level::ERROR);
        assert_eq!(level(Level::INFO, 9, 0), Level::TRACE);
        assert_eq!(level(Level::INFO, 0, 9), Level::ERROR);
        assert_eq!(level(Level::INFO, 2, 1), Level::DEBUG);
    }
}
