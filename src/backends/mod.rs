//! What hookops talks to: the repository (`repo`, `objects`), subprocesses (`process`, and
//! through it `kube`, `helm` and `terraform`; renderers of pushed input through `sandbox`), Vault, other
//! git servers (`remote`), and the masking that keeps secrets out of everything they print.

pub mod helm;
pub mod http;
pub mod kube;
pub mod lease;
pub mod mask;
pub mod objects;
pub mod process;
pub mod remote;
pub mod repo;
pub mod sandbox;
pub mod terraform;
pub mod vault;
