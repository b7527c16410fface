//! The deploy pipeline, one stage a file, in the order `deploy` runs them:
//! refs → environments → diff → declare (targets, with references, manifest, identity,
//! annotations: what a tree declares) →
//! plan (with inventory) → apply → health → pointer, with the journal around each attempt.
//! `fanout` runs several environments' deploys side by side.

pub mod annotations;
pub mod apply;
pub mod cache;
pub mod declare;
pub mod deploy;
pub mod diff;
pub mod environments;
pub mod fanout;
#[cfg(test)]
mod fixtures;
pub mod health;
pub mod hosts;
pub mod identity;
pub mod inventory;
pub mod inventory_cluster;
pub mod journal;
pub mod kinds;
pub mod livediff;
pub mod manifest;
pub mod plan;
pub mod planner;
pub mod pointer;
pub mod references;
pub mod refs;
pub mod secrets;
