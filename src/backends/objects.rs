//! Reading the pushed tree safely: blobs by path with a size cap, symlinks and submodules
//! refused (never followed), and subtrees written out to a work directory when a tool needs
//! real files (kustomize, terraform).

use std::fs;
use std::path::Path;

use anyhow::{bail, Context, Result};
use git2::{FileMode, ObjectType, Oid, Repository, Tree, TreeWalkMode, TreeWalkResult};

/// Largest file hookops reads from a tree: manifests and configs are small, and a huge blob
/// pushed by mistake (or on purpose) must not exhaust the server's memory.
pub const MAX_FILE_BYTES: usize = 8 * 1024 * 1024;

/// Reads a blob after checking its size from the object header (without inflating it).
pub fn read_blob(repo: &Repository, id: Oid, path: &str) -> Result<Vec<u8>> {
    let odb = repo.odb()?;
    let (size, kind) = odb
        .read_header(id)
        .with_context(|| format!("{path}: cannot read object {id}"))?;
    if kind != ObjectType::Blob {
        bail!("{path}: not a file");
    }
    if size > MAX_FILE_BYTES {
        bail!("{path}: file too large ({size} bytes; the limit is {MAX_FILE_BYTES})");
    }
    let blob = repo.find_blob(id)?;
    Ok(blob.content().to_vec())
}

pub fn read_text(repo: &Repository, id: Oid, path: &str) -> Result<String> {
    decode_text(read_blob(repo, id, path)?).map_err(|why| anyhow::anyhow!("{path}: {why}"))
}

/// Text as kubectl reads it: a UTF-8 byte-order mark is dropped and UTF-16 with one (little or
/// big endian) is decoded; anything else must be UTF-8. kubectl would decode invalid UTF-8
/// with replacement characters; deploying mangled values silently is worse than refusing.
pub fn decode_text(bytes: Vec<u8>) -> std::result::Result<String, &'static str> {
    let utf16 = |rest: &[u8], unit: fn([u8; 2]) -> u16| {
        if !rest.len().is_multiple_of(2) {
            return Err("not UTF-16 text (an odd number of bytes after a UTF-16 byte-order mark)");
        }
        let units = rest.chunks_exact(2).map(|c| unit([c[0], c[1]]));
        char::decode_utf16(units)
            .collect::<std::result::Result<String, _>>()
            .map_err(|_| "not UTF-16 text (an unpaired surrogate after a UTF-16 byte-order mark)")
    };
    match bytes.as_slice() {
        [0xEF, 0xBB, 0xBF, rest @ ..] => std::str::from_utf8(rest)
            .map(str::to_string)
            .map_err(|_| "not UTF-8 text"),
        [0xFF, 0xFE, rest @ ..] => utf16(rest, u16::from_le_bytes),
        [0xFE, 0xFF, rest @ ..] => utf16(rest, u16::from_be_bytes),
        _ => String::from_utf8(bytes).map_err(|_| "not UTF-8 text"),
    }
}

/// Why a file whose name is not UTF-8 (`shown` escaped) is refused.
pub fn not_utf8(shown: &str) -> String {
    format!(
        "{shown}: the file name is not UTF-8, so it cannot be read or named to kubectl (rename it)"
    )
}

/// A file name as bytes, shown as text: UTF-8 as it is, other bytes as `\xNN`.
pub fn escape_name(name: &[u8]) -> String {
    let mut out = String::new();
    for chunk in name.utf8_chunks() {
        out.push_str(chunk.valid());
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

/// What sits at `path` in `tree`, if anything.
pub fn entry(tree: &Tree, path: &str) -> Option<(Oid, i32)> {
    if path.is_empty() {
        return Some((tree.id(), i32::from(FileMode::Tree)));
    }
    tree.get_path(Path::new(path))
        .ok()
        .map(|e| (e.id(), e.filemode()))
}

pub fn is_link(mode: i32) -> bool {
    mode == i32::from(FileMode::Link)
}

pub fn is_tree(mode: i32) -> bool {
    mode == i32::from(FileMode::Tree)
}

pub fn is_submodule(mode: i32) -> bool {
    mode == i32::from(FileMode::Commit)
}

/// Reads a file by path; `Ok(None)` when absent. Symlinks are refused, never followed.
pub fn read_path(repo: &Repository, tree: &Tree, path: &str) -> Result<Option<String>> {
    match entry(tree, path) {
        None => Ok(None),
        Some((_, mode)) if is_link(mode) => {
            bail!("{path}: is a symbolic link; hookops refuses symlinks in deployed trees")
        }
        Some((_, mode)) if is_tree(mode) || is_submodule(mode) => bail!("{path}: not a file"),
        Some((id, _)) => read_text(repo, id, path).map(Some),
    }
}

/// A file under a directory: its full path, blob id and mode.
pub struct FileEntry {
    pub path: String,
    pub id: Oid,
    pub mode: i32,
}

/// Files under `dir` (recursive or only the directory itself). Symlinks and submodules are
/// returned so the caller can refuse them with a precise message.
pub fn files_under(
    repo: &Repository,
    tree: &Tree,
    dir: &str,
    recursive: bool,
) -> Result<Vec<FileEntry>> {
    let sub = match entry(tree, dir) {
        None => return Ok(Vec::new()),
        Some((id, mode)) if is_tree(mode) => repo.find_tree(id)?,
        Some(_) => bail!("{dir}: not a directory"),
    };
    let prefix = if dir.is_empty() {
        String::new()
    } else {
        format!("{dir}/")
    };
    let mut files = Vec::new();
    if !recursive {
        for e in sub.iter() {
            let mode = e.filemode();
            if is_tree(mode) {
                continue;
            }
            let Some(name) = e.name() else {
                bail!(
                    "{}",
                    not_utf8(&format!("{prefix}{}", escape_name(e.name_bytes())))
                );
            };
            files.push(FileEntry {
                path: format!("{prefix}{name}"),
                id: e.id(),
                mode,
            });
        }
        return Ok(files);
    }
    let mut bad_name = None;
    sub.walk(TreeWalkMode::PreOrder, |root, e| {
        let mode = e.filemode();
        if is_tree(mode) {
            return TreeWalkResult::Ok;
        }
        match e.name() {
            Some(name) => files.push(FileEntry {
                path: format!("{prefix}{root}{name}"),
                id: e.id(),
                mode,
            }),
            None => {
                bad_name = Some(format!("{prefix}{root}{}", escape_name(e.name_bytes())));
                return TreeWalkResult::Abort;
            }
        }
        TreeWalkResult::Ok
    })
    .ok();
    if let Some(path) = bad_name {
        bail!("{}", not_utf8(&path));
    }
    Ok(files)
}

/// Files a tool keeps in its work directory across deploys (Terraform state and plugins).
const KEEP: &[&str] = &[
    ".terraform",
    "terraform.tfstate",
    "terraform.tfstate.backup",
    ".terraform.tfstate.lock.info",
];

/// Empties `dir` except the files in `KEEP`, so a materialised tree never carries files the
/// new commit deleted.
pub fn clean_dir(dir: &Path) -> Result<()> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
    };
    for e in entries {
        let e = e?;
        let name = e.file_name();
        if KEEP.iter().any(|k| name == *k) {
            continue;
        }
        let path = e.path();
        let kind = e.file_type()?;
        if kind.is_dir() {
            clean_dir(&path)?;
            let _ = fs::remove_dir(&path);
        } else {
            fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
        }
    }
    Ok(())
}

/// Writes the files of `dir` (recursively) from `tree` under `root`, keeping their repository
/// paths. Refuses symlinks and submodules.
pub fn materialise(repo: &Repository, tree: &Tree, dir: &str, root: &Path) -> Result<usize> {
    let files = files_under(repo, tree, dir, true)?;
    if files.is_empty() && entry(tree, dir).is_none() {
        bail!("{dir}: no such directory in the tree");
    }
    write_files(repo, &files, root)
}

/// Like `materialise`, for a path that may be a directory or a single file.
pub fn materialise_path(repo: &Repository, tree: &Tree, path: &str, root: &Path) -> Result<usize> {
    match entry(tree, path) {
        Some((id, mode)) if !is_tree(mode) => write_files(
            repo,
            &[FileEntry {
                path: path.to_string(),
                id,
                mode,
            }],
            root,
        ),
        _ => materialise(repo, tree, path, root),
    }
}

/// A tool's message about files materialised under `root`, with repository paths in place of
/// the server's: `<root>/base/x.yaml` reads `base/x.yaml`.
pub fn repository_paths(message: &str, root: &Path) -> String {
    let mut out = message.to_string();
    let mut roots = vec![root.to_path_buf()];
    if let Ok(real) = root.canonicalize() {
        roots.push(real);
    }
    // Longest first, so a root that is a prefix of the other's spelling is not half-replaced.
    roots.sort_by_key(|r| std::cmp::Reverse(r.as_os_str().len()));
    for r in roots {
        let r = r.display().to_string();
        out = out.replace(&format!("{r}/"), "").replace(&r, ".");
    }
    out
}

fn write_files(repo: &Repository, files: &[FileEntry], root: &Path) -> Result<usize> {
    for f in files {
        if is_link(f.mode) {
            bail!(
                "{}: is a symbolic link; hookops refuses symlinks in deployed trees",
                f.path
            );
        }
        if is_submodule(f.mode) {
            bail!("{}: submodules are not supported in deploy targets", f.path);
        }
        let dest = root.join(&f.path);
        if let Some(parent) = dest.parent() {
            fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        }
        let bytes = read_blob(repo, f.id, &f.path)?;
        fs::write(&dest, bytes).with_context(|| format!("writing {}", dest.display()))?;
        #[cfg(unix)]
        if f.mode == i32::from(FileMode::BlobExecutable) {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&dest, fs::Permissions::from_mode(0o755))?;
        }
    }
    Ok(files.len())
}

#[cfg(test)]
mod tests {
    use super::decode_text;

    #[test]
    fn byte_order_marks_are_read_as_kubectl_reads_them() {
        let text = "kind: ü\n";
        assert_eq!(decode_text(text.into()).unwrap(), text);
        let bom8 = [&[0xEF, 0xBB, 0xBF][..], text.as_bytes()].concat();
        assert_eq!(decode_text(bom8).unwrap(), text);
        let units: Vec<u16> = text.encode_utf16().collect();
        let le: Vec<u8> = [0xFF, 0xFE]
            .into_iter()
            .chain(units.iter().flat_map(|u| u.to_le_bytes()))
            .collect();
        let be: Vec<u8> = [0xFE, 0xFF]
            .into_iter()
            .chain(units.iter().flat_map(|u| u.to_be_bytes()))
            .collect();
        assert_eq!(decode_text(le.clone()).unwrap(), text);
        assert_eq!(decode_text(be).unwrap(), text);
        assert!(decode_text(le[..le.len() - 1].to_vec())
            .unwrap_err()
            .contains("odd number of bytes"));
        assert!(decode_text(vec![0xFF, 0xFE, 0x00, 0xD8])
            .unwrap_err()
            .contains("unpaired surrogate"));
        assert_eq!(decode_text(vec![b'a', 0xFF]).unwrap_err(), "not UTF-8 text");
        // A BOM in the middle is text, as in kubectl.
        assert_eq!(decode_text("a\u{feff}".into()).unwrap(), "a\u{feff}");
    }
}
