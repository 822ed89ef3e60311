//! Failure evidence: what the browser showed when an attempt failed,
//! stored where the engineer on call can open it.
//!
//! ```text
//! attempt fails ─▶ Spool::keep (files written and fsynced locally)
//!               ─▶ keys journaled with attempt_failed / post_submission_failed
//!               ─▶ Uploader (background) ─▶ Store (S3 or a local folder)
//!                         └─ failure: artifact_upload_failed journaled, the
//!                            file stays spooled, retried with backoff and
//!                            again after a restart
//! ```
//!
//! Keys are `{prefix}/{job}/{attempt}-{stage}-{utc time}.{ext}` (no leading
//! `{prefix}/` when the prefix is empty), with `png` for the full-page
//! screenshot, `html` for the page, and `json` for the URL, the console log
//! and a note of any part that could not be taken.

mod spool;
mod store;
mod uploader;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::book::Recorder;

pub use spool::{evidence_files, Spool};
pub use store::{content_type, StoreError, EXTENSIONS};
pub use store::{remove_older_than, ArtifactStore, Link, LocalStore, S3Settings, S3Store, Store};
pub use uploader::{RetryPolicy, Uploader};

/// The `[artifacts]` section of the daemon's configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ArtifactsSection {
    /// The local store, and the spool of files not yet stored; empty is
    /// `{work_dir}/artifacts`.
    pub dir: PathBuf,
    /// The S3 bucket; empty keeps evidence in the local folder.
    pub bucket: String,
    /// Put before every key, without slashes at either end.
    pub prefix: String,
    /// The bucket's region; empty takes it from the AWS chain, else
    /// `us-east-1`.
    pub region: String,
    /// An S3-compatible server's address (MinIO, Ceph); empty is AWS.
    pub endpoint: String,
    /// Bucket in the path instead of the host name (most S3-compatible
    /// servers need it).
    pub path_style: bool,
    /// Server-side encryption: empty (the bucket's default), `AES256` or
    /// `aws:kms`.
    pub sse: String,
    /// The KMS key for `aws:kms`; empty is the account's default key.
    pub sse_kms_key_id: String,
    /// How long a pre-signed link in the API and dashboard stays valid.
    pub link_expiry_s: u64,
    /// Local evidence older than this many days is deleted; 0 keeps it.
    pub retention_days: u64,
    /// The longest wait between two tries of one upload.
    pub retry_max_s: u64,
}

impl Default for ArtifactsSection {
    fn default() -> Self {
        ArtifactsSection {
            dir: PathBuf::new(),
            bucket: String::new(),
            prefix: String::new(),
            region: String::new(),
            endpoint: String::new(),
            path_style: false,
            sse: String::new(),
            sse_kms_key_id: String::new(),
            link_expiry_s: 3600,
            retention_days: 90,
            retry_max_s: 300,
        }
    }
}

impl ArtifactsSection {
    /// The first setting that cannot work: its key and why.
    pub fn problem(&self) -> Option<(&'static str, &'static str)> {
        if !matches!(self.sse.as_str(), "" | "AES256" | "aws:kms") {
            return Some(("artifacts.sse", "must be empty, \"AES256\" or \"aws:kms\""));
        }
        if !self.endpoint.is_empty() && url::Url::parse(&self.endpoint).is_err() {
            return Some(("artifacts.endpoint", "is not a URL"));
        }
        if self.prefix.starts_with('/') || self.prefix.ends_with('/') {
            return Some(("artifacts.prefix", "must not start or end with '/'"));
        }
        if self.prefix.split('/').any(|s| s == ".." || s == ".")
            || !self
                .prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
        {
            return Some((
                "artifacts.prefix",
                "may hold only letters, digits, '-', '_', '.' and '/', and no '.' or '..' segment",
            ));
        }
        if !(1..=7 * 24 * 3600).contains(&self.link_expiry_s) {
            return Some((
                "artifacts.link_expiry_s",
                "must be 1 to 604800 (S3 allows a week)",
            ));
        }
        if self.retry_max_s == 0 {
            return Some(("artifacts.retry_max_s", "must be at least 1"));
        }
        None
    }

    /// The local folder: `dir`, or `{work_dir}/artifacts`.
    pub fn local_dir(&self, work_dir: &Path) -> PathBuf {
        if self.dir.as_os_str().is_empty() {
            work_dir.join("artifacts")
        } else {
            self.dir.clone()
        }
    }

    /// The store these settings name.
    pub async fn open_store(&self, work_dir: &Path) -> ArtifactStore {
        let local = LocalStore::new(self.local_dir(work_dir));
        if self.bucket.is_empty() {
            return ArtifactStore::Local(local);
        }
        ArtifactStore::S3(
            S3Store::connect(S3Settings {
                bucket: self.bucket.clone(),
                region: self.region.clone(),
                endpoint: self.endpoint.clone(),
                path_style: self.path_style,
                sse: self.sse.clone(),
                sse_kms_key_id: self.sse_kms_key_id.clone(),
                link_expiry: Duration::from_secs(self.link_expiry_s),
            })
            .await,
        )
    }
}

/// How often local evidence is checked against the retention age.
const RETENTION_SWEEP: Duration = Duration::from_secs(3600);

/// The evidence side of a running daemon: the spool the attempts write to,
/// the store, the uploader and the retention sweep.
pub struct Evidence {
    pub spool: Spool,
    pub store: Arc<ArtifactStore>,
    stop: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl Evidence {
    /// Opens the store and starts the uploader (which first sends what an
    /// earlier run left in the spool) and the retention sweep.
    pub async fn start(
        section: &ArtifactsSection,
        work_dir: &Path,
        recorder: Arc<Recorder>,
    ) -> Evidence {
        let local_dir = section.local_dir(work_dir);
        let store = Arc::new(section.open_store(work_dir).await);
        let (spool, wake_rx) = Spool::new(local_dir.join(".spool"), section.prefix.clone());
        let stop = CancellationToken::new();
        let max = Duration::from_secs(section.retry_max_s);
        let policy = RetryPolicy {
            first: RetryPolicy::default().first.min(max),
            max,
        };
        info!(store = %store.describe(), "failure evidence");
        let uploader = Uploader::new(Arc::clone(&store), spool.clone(), recorder, policy);
        let mut tasks = vec![tokio::spawn(uploader.run(wake_rx, stop.clone()))];
        if section.retention_days > 0 {
            let age = Duration::from_secs(section.retention_days * 24 * 3600);
            let keep = spool.dir().to_owned();
            tasks.push(tokio::spawn(sweep(local_dir, keep, age, stop.clone())));
        }
        Evidence {
            spool,
            store,
            stop,
            tasks,
        }
    }

    /// Stops the uploader and the sweep; spooled files wait for the next
    /// start.
    pub async fn stop(self) {
        self.stop.cancel();
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// Deletes local evidence older than `age`, now and then every hour.
async fn sweep(root: PathBuf, keep: PathBuf, age: Duration, stop: CancellationToken) {
    loop {
        let (root, keep) = (root.clone(), keep.clone());
        let swept = tokio::task::spawn_blocking(move || remove_older_than(&root, age, &keep)).await;
        match swept {
            Ok(Ok(0)) => {}
            Ok(Ok(n)) => info!(files = n, "old evidence deleted (retention)"),
            Ok(Err(e)) => warn!(error = %e, "the retention sweep failed"),
            Err(e) => warn!(error = %e, "the retention sweep stopped"),
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(RETENTION_SWEEP) => {}
        }
    }
}

/// The key of one piece of evidence, without its extension.
pub fn key_stem(prefix: &str, job: &str, attempt: u32, stage: &str, stamp: &str) -> String {
    let stage: String = stage
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    // A job id such as `..` or `.spool` would, as a folder, climb out of
    // the job's folder or into the spool.
    let job = if job.starts_with('.') {
        format!("_{job}")
    } else {
        job.replace('/', "_")
    };
    let stem = format!("{job}/{attempt}-{stage}-{stamp}");
    if prefix.is_empty() {
        stem
    } else {
        format!("{prefix}/{stem}")
    }
}

/// The job a key belongs to: the segment before the file name.
pub fn job_of_key(key: &str) -> Option<&str> {
    let mut parts = key.rsplit('/');
    let _file = parts.next()?;
    parts.next().filter(|j| !j.is_empty())
}

/// Whether `key` is one formwright could have made: relative, with no
/// empty, `.` or `..` segment. A local path is built from nothing else.
pub fn key_is_safe(key: &str) -> bool {
    !key.is_empty()
        && !key.starts_with('/')
        && !key.contains('\\')
        && key
            .split('/')
            .all(|s| !s.is_empty() && s != "." && s != "..")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_the_documented_layout() {
        let stamp = "20260101T000000.000Z";
        assert_eq!(
            key_stem("ev/prod", "POL-1", 2, "fill step", stamp),
            "ev/prod/POL-1/2-fill-step-20260101T000000.000Z"
        );
        assert_eq!(
            key_stem("", "POL-1", 1, "x", stamp),
            format!("POL-1/1-x-{stamp}")
        );
        assert!(key_stem("", "..", 1, "x", stamp).starts_with("_../"));
        assert_eq!(job_of_key("ev/POL-1/1-x.png"), Some("POL-1"));
        assert_eq!(job_of_key("x.png"), None);
    }

    #[test]
    fn unsafe_keys_are_told_apart() {
        assert!(key_is_safe("a/b/1-x.png"));
        for bad in ["", "/a/b", "a/../b", "a//b", "./a", "a\\b"] {
            assert!(!key_is_safe(bad), "{bad}");
        }
    }

    #[test]
    fn a_bad_setting_is_named() {
        let bad = ArtifactsSection {
            sse: "rot13".into(),
            ..ArtifactsSection::default()
        };
        assert_eq!(bad.problem().map(|p| p.0), Some("artifacts.sse"));
        let bad = ArtifactsSection {
            prefix: "/x".into(),
            ..ArtifactsSection::default()
        };
        assert_eq!(bad.problem().map(|p| p.0), Some("artifacts.prefix"));
        assert_eq!(ArtifactsSection::default().problem(), None);
    }
}
