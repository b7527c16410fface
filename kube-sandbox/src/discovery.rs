//! The shape of a built-in resource as the real API server's discovery lists it: the types of
//! the generated table in `builtin.rs`, which `resources.rs` serves.

/// The verbs of an ordinary stored resource.
pub const ALL_VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];
/// The verbs of a `/status` or `/scale` subresource.
pub const GET_PATCH_UPDATE: &[&str] = &["get", "patch", "update"];

/// One built-in resource as the real server's discovery lists it (the
/// generated table in `builtin.rs`).
pub struct Builtin {
    pub group: &'static str,
    pub version: &'static str,
    pub plural: &'static str,
    pub singular: &'static str,
    pub kind: &'static str,
    pub namespaced: bool,
    pub verbs: &'static [&'static str],
    pub short_names: &'static [&'static str],
    pub categories: &'static [&'static str],
    /// All the real server's subresources; the sandbox serves (and lists)
    /// only `status` and `scale`.
    pub subresources: &'static [Sub],
}

/// A subresource; `group` and `version` are empty when its kind is of the
/// resource's own group version.
pub struct Sub {
    pub name: &'static str,
    pub kind: &'static str,
    pub group: &'static str,
    pub version: &'static str,
    pub verbs: &'static [&'static str],
}
