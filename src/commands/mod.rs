//! One file per command family: what each `hookops` subcommand does, built from the pipeline
//! below it. Nothing under `pipeline/`, `ops/`, `record/` or `backends/` imports from here.

pub mod audit;
pub mod doctor;
pub mod drift;
pub mod gate;
pub mod hooks;
pub mod install;
pub mod watch;
