//! `outpost`: the fleet daemon and its command line.

fn main() {
    let _ = <cli::Cli as clap::Parser>::parse();
}
