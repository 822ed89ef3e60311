//! Folders and files that only the daemon's own user may read.
//!
//! The journal holds customers' personal data, the browser profiles hold
//! the portal's session cookies, and failure evidence shows filled-in
//! forms. Each is created `0700` (folders) or `0600` (files) explicitly,
//! whatever the process's umask, and the daemon also narrows its umask at
//! start so that what Chromium and sled create inside those folders
//! follows suit.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::Path;

/// Creates `path` and any missing parents, each readable by the owner
/// only. Folders that already exist are left as they are: they may be
/// shared ones the operator chose.
pub fn create_dir_all(path: &Path) -> io::Result<()> {
    if path.is_dir() {
        return Ok(());
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(path)?;
    // The mode above is narrowed by the umask, never widened; this makes
    // it exact.
    restrict(path)
}

/// Creates (or truncates) a file only its owner may read or write.
pub fn create_file(path: &Path) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let file = options.open(path)?;
    // `mode` applies only when the file is new.
    restrict(path)?;
    Ok(file)
}

/// Narrows an existing folder (`0700`) or file (`0600`) to its owner.
pub fn restrict(path: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = if path.is_dir() { 0o700 } else { 0o600 };
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    }
    Ok(())
}

/// Narrows `path` and everything under it (symlinks are left alone).
pub fn restrict_tree(path: &Path) -> io::Result<()> {
    let meta = std::fs::symlink_metadata(path)?;
    if meta.file_type().is_symlink() {
        return Ok(());
    }
    restrict(path)?;
    if meta.is_dir() {
        for entry in std::fs::read_dir(path)? {
            restrict_tree(&entry?.path())?;
        }
    }
    Ok(())
}

/// Makes every file and folder this process creates from now on readable
/// by its owner only (umask `077`). Called once by the daemon at start.
pub fn narrow_umask() {
    #[cfg(unix)]
    // SAFETY: umask only swaps the process's file-creation mask; it has no
    // memory effects and cannot fail.
    unsafe {
        libc::umask(0o077);
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn folders_and_files_are_the_owners_alone() {
        let dir = tempfile::tempdir().unwrap();
        let nested = dir.path().join("a/b/c");
        create_dir_all(&nested).unwrap();
        assert_eq!(mode(&nested), 0o700);
        assert_eq!(mode(&dir.path().join("a/b")), 0o700);

        let file = nested.join("f");
        std::fs::write(&file, b"x").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        drop(create_file(&file).unwrap());
        assert_eq!(mode(&file), 0o600);

        let loose = dir.path().join("loose");
        std::fs::create_dir(&loose).unwrap();
        std::fs::write(loose.join("g"), b"y").unwrap();
        std::fs::set_permissions(&loose, std::fs::Permissions::from_mode(0o755)).unwrap();
        restrict_tree(&loose).unwrap();
        assert_eq!(mode(&loose), 0o700);
        assert_eq!(mode(&loose.join("g")), 0o600);
    }
}
