//! Logging to stderr with `tracing`: text or JSON lines; the level comes from `-v`/`-q`,
//! overridden by `OUTPOST_LOG` (an `EnvFilter` directive such as `outpost_daemon=debug`).

use tracing_subscriber::EnvFilter;

use crate::cli::LogFormat;

/// Installs the global subscriber. `verbose`/`quiet` are the counts of `-v`/`-q`; `default`
/// is the level with neither.
pub(crate) fn init(format: LogFormat, verbose: u8, quiet: u8, default: tracing::Level) {
    let levels = [
        tracing::Level::ERROR,
        tracing::Level::WARN,
        tracing::Level::INFO,
        tracing::Level::DEBUG,
        tracing::Level::TRACE,
    ];
    let base = levels.iter().position(|l| *l == default).unwrap_or(2);
    let index = (base + usize::from(verbose))
        .saturating_sub(usize::from(quiet))
        .min(levels.len() - 1);
    let filter = match std::env::var("OUTPOST_LOG") {
        Ok(directives) if !directives.is_empty() => EnvFilter::new(directives),
        _ => EnvFilter::new(levels[index].as_str()),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // A second initialisation (tests) keeps the first subscriber, which is fine.
    let _ = match format {
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
    };
}
