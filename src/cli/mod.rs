//! The command line: one file per command. `main.rs` only parses and calls.

pub mod client;
pub mod demo;
pub mod export;
pub mod replay;
pub mod run;
