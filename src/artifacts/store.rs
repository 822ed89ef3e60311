//! Where evidence ends up: an S3 bucket (or an S3-compatible server), or a
//! local folder. Both take a spooled file under its key and give a link to
//! it; the uploader and the API see only [`Store`].

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use aws_sdk_s3::config::{Region, RequestChecksumCalculation};
use aws_sdk_s3::error::DisplayErrorContext;
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::ServerSideEncryption;
use tracing::{info, warn};

use super::key_is_safe;

/// The extensions evidence is stored under, with their content types.
pub const EXTENSIONS: [(&str, &str); 3] = [
    ("png", "image/png"),
    ("html", "text/html; charset=utf-8"),
    ("json", "application/json"),
];

/// Why a piece of evidence could not be stored or linked. Names the key;
/// never holds credentials (the SDK's messages do not carry them).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{key}: not a key formwright makes")]
    UnsafeKey { key: String },
    #[error("{key}: {source}")]
    Io { key: String, source: std::io::Error },
    #[error("{key}: S3: {message}")]
    S3 { key: String, message: String },
}

/// How the API and the dashboard point at a piece of evidence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Link {
    /// A pre-signed S3 URL, valid for the configured time.
    Url(String),
    /// A file the API serves itself.
    File(PathBuf),
}

/// A place evidence is kept.
pub trait Store: Send + Sync {
    /// Stores the spooled file `file` under `key`. On success the spooled
    /// file may be gone (moved) or still there; the caller removes it.
    fn put(&self, key: &str, file: &Path) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// A link to the evidence under `key`.
    fn link(&self, key: &str) -> impl Future<Output = Result<Link, StoreError>> + Send;
}

/// The store the configuration names.
pub enum ArtifactStore {
    Local(LocalStore),
    S3(S3Store),
}

impl ArtifactStore {
    /// The local folder, also where the spool lives.
    pub fn describe(&self) -> String {
        match self {
            ArtifactStore::Local(l) => format!("local folder {}", l.root.display()),
            ArtifactStore::S3(s) => format!("S3 bucket {}", s.bucket),
        }
    }
}

impl Store for ArtifactStore {
    async fn put(&self, key: &str, file: &Path) -> Result<(), StoreError> {
        match self {
            ArtifactStore::Local(s) => s.put(key, file).await,
            ArtifactStore::S3(s) => s.put(key, file).await,
        }
    }

    async fn link(&self, key: &str) -> Result<Link, StoreError> {
        match self {
            ArtifactStore::Local(s) => s.link(key).await,
            ArtifactStore::S3(s) => s.link(key).await,
        }
    }
}

pub fn content_type(key: &str) -> &'static str {
    let ext = key.rsplit_once('.').map_or("", |(_, e)| e);
    EXTENSIONS
        .iter()
        .find(|(e, _)| *e == ext)
        .map_or("application/octet-stream", |(_, t)| t)
}

/// Evidence kept in a folder, one file per key.
#[derive(Clone, Debug)]
pub struct LocalStore {
    root: PathBuf,
}

impl LocalStore {
    pub fn new(root: impl Into<PathBuf>) -> LocalStore {
        LocalStore { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The file of `key`, if the key is one formwright makes.
    pub fn path_of(&self, key: &str) -> Result<PathBuf, StoreError> {
        if !key_is_safe(key) {
            return Err(StoreError::UnsafeKey { key: key.into() });
        }
        Ok(self.root.join(key))
    }
}

impl Store for LocalStore {
    async fn put(&self, key: &str, file: &Path) -> Result<(), StoreError> {
        let target = self.path_of(key)?;
        let file = file.to_owned();
        let io = |source| StoreError::Io {
            key: key.into(),
            source,
        };
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            let parent = target.parent().unwrap_or(Path::new("."));
            crate::owner_only::create_dir_all(parent)?;
            // The spool sits inside the store's folder, so this is a rename
            // on one file system; a copy covers a spool moved elsewhere.
            if std::fs::rename(&file, &target).is_err() {
                std::fs::copy(&file, &target)?;
                crate::owner_only::restrict(&target)?;
                std::fs::File::open(&target)?.sync_all()?;
            }
            std::fs::File::open(parent)?.sync_all()
        })
        .await
        .map_err(|e| io(std::io::Error::other(e)))?
        .map_err(io)
    }

    async fn link(&self, key: &str) -> Result<Link, StoreError> {
        Ok(Link::File(self.path_of(key)?))
    }
}

/// Deletes the files under `root` whose last change is older than `age`,
/// and the folders that leaves empty, except `keep` (the spool: evidence
/// not stored yet is never deleted). Returns how many files went.
pub fn remove_older_than(root: &Path, age: Duration, keep: &Path) -> std::io::Result<usize> {
    let Some(cutoff) = SystemTime::now().checked_sub(age) else {
        return Ok(0);
    };
    fn walk(dir: &Path, cutoff: SystemTime, keep: &Path) -> std::io::Result<usize> {
        let mut removed = 0;
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let path = entry.path();
            let meta = entry.metadata()?;
            if path == keep {
                continue;
            }
            if meta.is_dir() {
                removed += walk(&path, cutoff, keep)?;
                // Only succeeds when the folder is empty, which is the aim.
                let _ = std::fs::remove_dir(&path);
            } else if meta.modified()? < cutoff {
                std::fs::remove_file(&path)?;
                removed += 1;
            }
        }
        Ok(removed)
    }
    if !root.exists() {
        return Ok(0);
    }
    walk(root, cutoff, keep)
}

/// What [`S3Store::connect`] needs.
#[derive(Clone, Debug)]
pub struct S3Settings {
    pub bucket: String,
    /// Empty: from the AWS chain, else `us-east-1`.
    pub region: String,
    /// Empty: AWS itself.
    pub endpoint: String,
    pub path_style: bool,
    /// Empty, `AES256` or `aws:kms`.
    pub sse: String,
    pub sse_kms_key_id: String,
    pub link_expiry: Duration,
}

/// Evidence in an S3 bucket. Credentials come from the standard AWS chain
/// (environment, shared files, web identity, container and instance
/// metadata); formwright never reads or logs them itself.
#[derive(Clone, Debug)]
pub struct S3Store {
    client: aws_sdk_s3::Client,
    bucket: String,
    sse: Option<ServerSideEncryption>,
    sse_kms_key_id: Option<String>,
    link_expiry: Duration,
}

impl S3Store {
    pub async fn connect(settings: S3Settings) -> S3Store {
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
        if !settings.region.is_empty() {
            loader = loader.region(Region::new(settings.region.clone()));
        }
        let shared = loader.load().await;
        let mut config = aws_sdk_s3::config::Builder::from(&shared)
            .force_path_style(settings.path_style)
            // Only what S3 requires: S3-compatible servers differ in which
            // of the newer checksums they accept.
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .timeout_config(
                aws_config::timeout::TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(5))
                    .operation_timeout(Duration::from_secs(60))
                    .build(),
            )
            // The uploader retries with its own, longer backoff.
            .retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(2));
        if shared.region().is_none() {
            config = config.region(Region::new("us-east-1"));
        }
        if !settings.endpoint.is_empty() {
            config = config.endpoint_url(&settings.endpoint);
        }
        info!(
            bucket = %settings.bucket,
            endpoint = %settings.endpoint,
            "evidence goes to S3"
        );
        S3Store {
            client: aws_sdk_s3::Client::from_conf(config.build()),
            bucket: settings.bucket,
            sse: (!settings.sse.is_empty()).then(|| ServerSideEncryption::from(&*settings.sse)),
            sse_kms_key_id: Some(settings.sse_kms_key_id).filter(|k| !k.is_empty()),
            link_expiry: settings.link_expiry,
        }
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The SDK client, for tests that read the bucket back.
    pub fn client(&self) -> &aws_sdk_s3::Client {
        &self.client
    }
}

impl Store for S3Store {
    async fn put(&self, key: &str, file: &Path) -> Result<(), StoreError> {
        let bytes = tokio::fs::read(file)
            .await
            .map_err(|source| StoreError::Io {
                key: key.into(),
                source,
            })?;
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type(content_type(key))
            .set_server_side_encryption(self.sse.clone())
            .set_ssekms_key_id(self.sse_kms_key_id.clone())
            .body(ByteStream::from(bytes))
            .send()
            .await
            .map_err(|e| StoreError::S3 {
                key: key.into(),
                message: DisplayErrorContext(&e).to_string(),
            })?;
        Ok(())
    }

    async fn link(&self, key: &str) -> Result<Link, StoreError> {
        let s3 = |message: String| StoreError::S3 {
            key: key.into(),
            message,
        };
        let presigning =
            PresigningConfig::expires_in(self.link_expiry).map_err(|e| s3(e.to_string()))?;
        let request = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .presigned(presigning)
            .await
            .map_err(|e| {
                warn!(key, "cannot pre-sign a link");
                s3(DisplayErrorContext(&e).to_string())
            })?;
        Ok(Link::Url(request.uri().to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types_follow_the_extension() {
        assert_eq!(content_type("a/1-x.png"), "image/png");
        assert_eq!(content_type("a/1-x.html"), "text/html; charset=utf-8");
        assert_eq!(content_type("a/1-x"), "application/octet-stream");
    }

    #[tokio::test]
    async fn the_local_store_moves_the_file_and_refuses_unsafe_keys() {
        let dir = tempfile::tempdir().unwrap();
        let spooled = dir.path().join("spooled");
        std::fs::write(&spooled, b"png").unwrap();
        let store = LocalStore::new(dir.path().join("store"));
        store.put("J/1-x.png", &spooled).await.unwrap();
        assert_eq!(
            std::fs::read(dir.path().join("store/J/1-x.png")).unwrap(),
            b"png"
        );
        assert!(matches!(
            store.put("../x.png", &spooled).await,
            Err(StoreError::UnsafeKey { .. })
        ));
        assert!(store.link("J/../../etc/passwd").await.is_err());
    }

    #[test]
    fn retention_removes_old_files_but_never_the_spool() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for f in ["J/1-x.png", ".spool/K/1-y.png"] {
            std::fs::create_dir_all(root.join(f).parent().unwrap()).unwrap();
            std::fs::write(root.join(f), b"x").unwrap();
        }
        let spool = root.join(".spool");
        assert_eq!(
            remove_older_than(root, Duration::from_secs(3600), &spool).unwrap(),
            0
        );
        assert_eq!(remove_older_than(root, Duration::ZERO, &spool).unwrap(), 1);
        assert!(!root.join("J").exists());
        assert!(root.join(".spool/K/1-y.png").exists());
    }
}
