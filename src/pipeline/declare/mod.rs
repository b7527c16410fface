//! What a tree declares: the one implementation of the definition in docs/architecture.md
//! ("What a tree declares", rules D1–D10), used by the deploy, `plan`, the gate, `drift` and
//! the status page alike.
//!
//! - `targets`: which directories are targets (D1–D3), found by walking up from the changed
//!   paths and reading the reference index, or over the whole tree on a first deploy; the
//!   files no target reads (D8).
//! - `read`: what a target reads and declares (D4, D5; manifests parsed by
//!   `pipeline::manifest`, identities resolved by `pipeline::identity`, D6); `chart`: what a
//!   chart target renders, with its values, dependencies and hooks.
//! - `winner`: the declaration order and the one winner of an identity declared more than
//!   once (D7).

pub mod chart;
pub mod read;
pub mod targets;
pub mod winner;
