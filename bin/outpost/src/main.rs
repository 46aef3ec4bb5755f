//! `outpost`: the fleet daemon and its command line.
fn main() {}
