//! What hookops talks to: the repository (`repo`, `objects`), subprocesses (`process`, and
//! through it `kube` and `terraform`), Vault, other git servers (`remote`), and the masking that
//! keeps secrets out of everything they print.

pub mod http;
pub mod kube;
pub mod lease;
pub mod mask;
pub mod objects;
pub mod process;
pub mod remote;
pub mod repo;
pub mod terraform;
pub mod vault;
