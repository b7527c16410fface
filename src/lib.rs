//! hookops: GitOps from a git hook. `main` parses the command line and dispatches; each stage of
//! the pipeline (refs → environment → diff → targets → plan → apply → health → record) lives in
//! the module named after it.

pub mod mask;
pub mod notes;
pub mod record;
pub mod vault;

use std::process::ExitCode;

pub fn main() -> ExitCode {
    ExitCode::SUCCESS
}
