//! `outpost-agent`: the check agent and `outpost check`, which embed CPython.
#[allow(dead_code)] // until every command is wired
mod cli;

fn main() {
    let _ = <cli::Cli as clap::Parser>::parse();
}
