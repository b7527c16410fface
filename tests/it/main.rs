//! One integration-test binary for the whole suite (one link, shared harness in `util`).

mod badinput;
mod cluster;
mod controls;
mod core;
mod crash;
mod environments;
mod gitolite;
mod https_git;
mod isolated;
mod layouts;
mod ops;
mod oracle;
mod packaging;
mod page;
mod realkube;
mod realkube_more;
mod realworld;
mod records;
mod safety;
mod secrets;
mod snapshots;
mod soak;
mod sshd;
mod util;
mod vault;
mod watch;
