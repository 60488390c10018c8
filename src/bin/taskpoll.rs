//! The `taskpoll` command line (being written).
fn main() {}
