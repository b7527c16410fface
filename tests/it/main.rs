//! One integration-test binary for the whole suite (one link, shared harness in `util`).

mod records;
mod util;
mod vault;
