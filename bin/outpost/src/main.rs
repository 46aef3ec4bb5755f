//! `outpost`: the fleet daemon and its command line.
#[allow(dead_code)] // until every command is wired
mod cli;

fn main() {
    let _ = <cli::Cli as clap::Parser>::parse();
}
