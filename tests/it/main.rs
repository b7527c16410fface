//! One integration-test binary for the whole suite (one link, shared harness in `util`).

mod core;
mod gitolite;
mod https_git;
mod isolated;
mod layouts;
mod ops;
mod packaging;
mod records;
mod safety;
mod secrets;
mod sshd;
mod util;
mod vault;
mod watch;
