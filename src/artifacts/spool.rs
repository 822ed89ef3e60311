//! The local spool: evidence is written here, and reaches the disk, before
//! its keys are journaled; the uploader empties it into the store. A file
//! in the spool is a piece of evidence not stored yet, so a restart finds
//! whatever an outage or a crash left behind.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::json;
use tokio::sync::mpsc;
use tracing::{debug, warn};

use super::key_stem;
use crate::browser::evidence::Captured;
use crate::journal::JobId;

/// Suffix of a file still being written; never uploaded, removed on scan.
const PARTIAL: &str = ".partial";

/// Where failed attempts leave their evidence. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Spool {
    dir: PathBuf,
    prefix: String,
    /// Tells the uploader a new key is waiting.
    wake_tx: mpsc::UnboundedSender<String>,
}

impl Spool {
    /// A spool in `dir` for keys under `prefix`, and the receiving end the
    /// uploader listens on.
    pub fn new(
        dir: impl Into<PathBuf>,
        prefix: impl Into<String>,
    ) -> (Spool, mpsc::UnboundedReceiver<String>) {
        let (wake_tx, wake_rx) = mpsc::unbounded_channel();
        let spool = Spool {
            dir: dir.into(),
            prefix: prefix.into(),
            wake_tx,
        };
        (spool, wake_rx)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The spooled file of `key`.
    pub fn path_of(&self, key: &str) -> PathBuf {
        self.dir.join(key)
    }

    /// Writes what was captured for a failure of `job`'s attempt at
    /// `stage`, each file fsynced, and returns the keys written. A file
    /// that cannot be written is logged and left out; it never fails the
    /// caller.
    pub async fn keep(
        &self,
        job: &JobId,
        attempt: u32,
        stage: &str,
        captured: Captured,
    ) -> Vec<String> {
        let now = chrono::Utc::now();
        let stamp = now.format("%Y%m%dT%H%M%S%.3fZ").to_string();
        let stem = key_stem(&self.prefix, &job.0, attempt, stage, &stamp);
        let files = evidence_files(&captured, &now.to_rfc3339(), stage);
        let dir = self.dir.clone();
        let written = tokio::task::spawn_blocking(move || {
            let mut keys = Vec::new();
            for (ext, bytes) in files {
                let key = format!("{stem}.{ext}");
                match write_durably(&dir.join(&key), &bytes) {
                    Ok(()) => keys.push(key),
                    Err(e) => warn!(%key, error = %e, "cannot spool a piece of evidence"),
                }
            }
            keys
        })
        .await
        .unwrap_or_default();
        for key in &written {
            // The uploader may have stopped (shutdown): the file stays and
            // the next start sends it.
            let _ = self.wake_tx.send(key.clone());
        }
        written
    }

    /// Every key waiting in the spool, oldest name first; removes files a
    /// crash left half-written.
    pub fn pending(&self) -> Vec<String> {
        let mut keys = Vec::new();
        let mut folders = vec![self.dir.clone()];
        while let Some(folder) = folders.pop() {
            let Ok(entries) = std::fs::read_dir(&folder) else {
                continue;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                if path.is_dir() {
                    folders.push(path);
                } else if path.to_string_lossy().ends_with(PARTIAL) {
                    debug!(path = %path.display(), "removing a half-written spool file");
                    let _ = std::fs::remove_file(&path);
                } else if let Ok(rel) = path.strip_prefix(&self.dir) {
                    let parts: Vec<String> = rel
                        .components()
                        .map(|c| c.as_os_str().to_string_lossy().into_owned())
                        .collect();
                    keys.push(parts.join("/"));
                }
            }
        }
        keys.sort();
        keys
    }

    /// Deletes the spooled file of a stored key and the folders that
    /// leaves empty.
    pub fn forget(&self, key: &str) {
        let path = self.path_of(key);
        let _ = std::fs::remove_file(&path);
        let mut parent = path.parent();
        while let Some(folder) = parent.filter(|p| *p != self.dir && p.starts_with(&self.dir)) {
            if std::fs::remove_dir(folder).is_err() {
                break;
            }
            parent = folder.parent();
        }
    }
}

/// The files of one failure: `png`, `html` when taken, and always a `json`
/// with the URL, the console log and what could not be taken.
pub fn evidence_files(captured: &Captured, at: &str, stage: &str) -> Vec<(&'static str, Vec<u8>)> {
    let mut files = Vec::new();
    if let Some(png) = &captured.png {
        files.push(("png", png.clone()));
    }
    if let Some(html) = &captured.html {
        files.push(("html", html.clone().into_bytes()));
    }
    let meta = json!({
        "captured_at": at,
        "stage": stage,
        "url": captured.url,
        "full_page": captured.full_page,
        "console": captured.console,
        "missing": captured.missing,
    });
    files.push(("json", serde_json::to_vec_pretty(&meta).unwrap_or_default()));
    files
}

/// Writes `bytes` to `path` so that, once this returns, the file is whole
/// on disk under its name: a partial file, fsync, rename, fsync the folder.
fn write_durably(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let folder = path.parent().unwrap_or(Path::new("."));
    crate::owner_only::create_dir_all(folder)?;
    let mut partial = path.as_os_str().to_owned();
    partial.push(PARTIAL);
    let partial = PathBuf::from(partial);
    let mut file = crate::owner_only::create_file(&partial)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&partial, path)?;
    std::fs::File::open(folder)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn kept_evidence_is_pending_until_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, mut wake_rx) = Spool::new(dir.path(), "ev");
        let captured = Captured {
            png: Some(vec![0x89, b'P', b'N', b'G']),
            html: Some("<html></html>".into()),
            url: Some("http://portal/x".into()),
            ..Captured::default()
        };
        let keys = spool.keep(&JobId::from("J"), 2, "save", captured).await;
        assert_eq!(keys.len(), 3);
        assert!(keys[0].starts_with("ev/J/2-save-") && keys[0].ends_with(".png"));
        assert_eq!(wake_rx.recv().await.as_deref(), Some(keys[0].as_str()));
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(spool.pending(), sorted);

        std::fs::write(dir.path().join("ev/J/x.png.partial"), b"half").unwrap();
        assert_eq!(spool.pending().len(), 3);
        assert!(!dir.path().join("ev/J/x.png.partial").exists());

        for key in &keys {
            spool.forget(key);
        }
        assert!(spool.pending().is_empty());
        assert!(!dir.path().join("ev").exists());
    }

    #[test]
    fn the_json_says_what_is_missing() {
        let files = evidence_files(&Captured::nothing("session gone"), "t", "fill");
        assert_eq!(files.len(), 1);
        let meta: serde_json::Value = serde_json::from_slice(&files[0].1).unwrap();
        assert_eq!(meta["missing"][0], "no browser: session gone");
    }
}
