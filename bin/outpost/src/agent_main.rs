//! `outpost-agent`: the check agent and `outpost check`, which embed CPython.
fn main() {}
