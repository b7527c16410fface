//! Entry point: parse the command line, run, print one error line and exit non-zero on failure.

use std::process::ExitCode;

fn main() -> ExitCode {
    hookops::main()
}
