//! Rewriting a file so that no reader ever sees it half-written.

use std::io::Write;
use std::path::Path;

/// Replaces the contents of `path`: writes a temporary file in the same
/// directory (so the rename stays on one file system), flushes it to disk,
/// gives it the original's permissions, then renames it over `path`.
/// On error the original is untouched and the temporary file is removed.
/// A symbolic link is followed: the file it points to is replaced, the link stays.
pub fn write_atomically(path: &Path, contents: &str) -> std::io::Result<()> {
    let resolved = std::fs::canonicalize(path);
    let path = resolved.as_deref().unwrap_or(path);
    let dir = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let permissions = std::fs::metadata(path).ok().map(|m| m.permissions());
    let mut temp = tempfile::Builder::new().prefix(".polc-fmt-").suffix(".tmp").tempfile_in(dir)?;
    temp.write_all(contents.as_bytes())?;
    temp.as_file().sync_all()?;
    if let Some(permissions) = permissions {
        temp.as_file().set_permissions(permissions)?;
    }
    temp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_contents_and_leaves_no_temporary_file() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("a.pol");
        std::fs::write(&path, "old")?;
        write_atomically(&path, "new\n")?;
        assert_eq!(std::fs::read_to_string(&path)?, "new\n");
        let names: Vec<_> = std::fs::read_dir(dir.path())?.filter_map(|e| e.ok()).map(|e| e.file_name()).collect();
        assert_eq!(names, [std::ffi::OsString::from("a.pol")]);
        Ok(())
    }

    #[cfg(unix)]
    #[test]
    fn writes_through_a_symbolic_link() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        let target = dir.path().join("real.pol");
        let link = dir.path().join("link.pol");
        std::fs::write(&target, "old")?;
        std::os::unix::fs::symlink(&target, &link)?;
        write_atomically(&link, "new")?;
        assert!(std::fs::symlink_metadata(&link)?.file_type().is_symlink());
        assert_eq!(std::fs::read_to_string(&target)?, "new");
        Ok(())
    }

    #[cfg(unix)]
    #[test]
    fn keeps_the_original_permissions() -> std::io::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("a.pol");
        std::fs::write(&path, "old")?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640))?;
        write_atomically(&path, "new")?;
        assert_eq!(std::fs::metadata(&path)?.permissions().mode() & 0o777, 0o640);
        Ok(())
    }
}
