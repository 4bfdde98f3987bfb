//! Where documents are kept: `STORAGE_DIR` (a local directory, the default kind) or
//! `STORAGE_URL` (`s3://bucket/prefix` for an S3-compatible store, `file:///dir` for a
//! directory), through the `object_store` crate so every kind has one interface.
//!
//! S3 credentials and endpoint come from `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
//! `AWS_REGION`, `AWS_ENDPOINT` (MinIO, Ceph and other S3-compatible servers) and
//! `AWS_ALLOW_HTTP`. Unset, the tasks that write documents are refused with the reason, and
//! order-api answers 503 for a document.

use std::path::PathBuf;
use std::sync::Arc;

use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::prefix::PrefixStore;
use object_store::{ObjectStore, PutPayload};
use shopfds_config::{ConfigError, Env, Secret};
use tracing::Instrument as _;

/// Where the store is.
#[derive(Debug, Clone, PartialEq)]
pub enum StorageLocation {
    /// A local directory, created if missing.
    Dir(PathBuf),
    /// `s3://bucket[/prefix]`.
    S3 { bucket: String, prefix: String },
}

/// `STORAGE_URL` / `STORAGE_DIR` and the S3 options.
#[derive(Debug, Clone, Default)]
pub struct StorageSettings {
    pub location: Option<StorageLocation>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<Secret>,
    pub region: Option<String>,
    pub endpoint: Option<String>,
    pub allow_http: bool,
}

impl StorageSettings {
    pub fn read(env: &Env) -> Result<Self, ConfigError> {
        let location = match (env.get("STORAGE_URL"), env.get("STORAGE_DIR")) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::new(
                    "STORAGE_URL",
                    "set STORAGE_URL or STORAGE_DIR, not both",
                ));
            }
            (Some(url), None) => Some(parse_url(&url)?),
            (None, Some(dir)) => Some(StorageLocation::Dir(PathBuf::from(dir))),
            (None, None) => None,
        };
        // Read whatever the location, so the configuration table lists them; used for S3 only.
        Ok(StorageSettings {
            location,
            access_key_id: env.get("AWS_ACCESS_KEY_ID"),
            secret_access_key: env.secret("AWS_SECRET_ACCESS_KEY"),
            region: env.get("AWS_REGION"),
            endpoint: env.get("AWS_ENDPOINT"),
            allow_http: env.flag("AWS_ALLOW_HTTP", false)?,
        })
    }

    /// A local directory (tests, the demo).
    pub fn dir(path: impl Into<PathBuf>) -> StorageSettings {
        StorageSettings {
            location: Some(StorageLocation::Dir(path.into())),
            ..StorageSettings::default()
        }
    }

    /// The store, or `None` when neither variable is set. A directory is created here; an S3
    /// bucket is not contacted until the first request.
    pub fn open(&self) -> Result<Option<Storage>, String> {
        let Some(location) = &self.location else {
            return Ok(None);
        };
        let (store, describe): (Arc<dyn ObjectStore>, String) = match location {
            StorageLocation::Dir(dir) => {
                std::fs::create_dir_all(dir)
                    .map_err(|e| format!("STORAGE_DIR: cannot create {}: {e}", dir.display()))?;
                let local = LocalFileSystem::new_with_prefix(dir)
                    .map_err(|e| format!("STORAGE_DIR: {}: {e}", dir.display()))?;
                (Arc::new(local), format!("directory {}", dir.display()))
            }
            StorageLocation::S3 { bucket, prefix } => {
                let mut builder = AmazonS3Builder::new()
                    .with_bucket_name(bucket)
                    .with_allow_http(self.allow_http);
                if let Some(v) = &self.access_key_id {
                    builder = builder.with_access_key_id(v);
                }
                if let Some(v) = &self.secret_access_key {
                    builder = builder.with_secret_access_key(v.expose());
                }
                if let Some(v) = &self.region {
                    builder = builder.with_region(v);
                }
                if let Some(v) = &self.endpoint {
                    builder = builder.with_endpoint(v);
                }
                let s3 = builder.build().map_err(|e| format!("STORAGE_URL: {e}"))?;
                let store: Arc<dyn ObjectStore> = if prefix.is_empty() {
                    Arc::new(s3)
                } else {
                    Arc::new(PrefixStore::new(s3, prefix.as_str()))
                };
                (store, format!("s3://{bucket}/{prefix}"))
            }
        };
        Ok(Some(Storage { store, describe }))
    }
}

fn parse_url(url: &str) -> Result<StorageLocation, ConfigError> {
    if let Some(rest) = url.strip_prefix("s3://") {
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(ConfigError::new(
                "STORAGE_URL",
                format!("{url}: no bucket (s3://bucket/prefix)"),
            ));
        }
        return Ok(StorageLocation::S3 {
            bucket: bucket.to_owned(),
            prefix: prefix.trim_matches('/').to_owned(),
        });
    }
    if let Some(path) = url.strip_prefix("file://") {
        if !path.starts_with('/') {
            return Err(ConfigError::new(
                "STORAGE_URL",
                format!("{url}: a file URL needs an absolute path (file:///var/lib/shopfds)"),
            ));
        }
        return Ok(StorageLocation::Dir(PathBuf::from(path)));
    }
    Err(ConfigError::new(
        "STORAGE_URL",
        format!("{url} must start with s3:// or file://"),
    ))
}

/// What [`Storage::put`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub path: String,
    pub size: usize,
}

/// The open store. Cheap to clone.
#[derive(Clone)]
pub struct Storage {
    store: Arc<dyn ObjectStore>,
    describe: String,
}

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe)
    }
}

impl Storage {
    /// The `object_store` interface, for what this wrapper does not cover (listing, deleting).
    pub fn objects(&self) -> Arc<dyn ObjectStore> {
        self.store.clone()
    }

    /// `directory /var/lib/…` or `s3://bucket/prefix`, for logs and health checks.
    pub fn describe(&self) -> &str {
        &self.describe
    }

    /// Whether the store answers: a `HEAD` of an object that need not exist (found or not found
    /// both mean it answered). For the worker's dependency probe, so a task that met the store
    /// down waits for it instead of spending its retries.
    pub async fn check(&self) -> Result<(), String> {
        match self.store.head(&Path::from("health/probe")).await {
            Ok(_) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.to_string()),
        }
    }

    /// [`Storage::check`] as a worker's dependency probe.
    pub fn probe(&self) -> shopfds_telemetry::ops::Check {
        let storage = self.clone();
        shopfds_telemetry::ops::check(move || {
            let storage = storage.clone();
            async move { storage.check().await }
        })
    }

    /// Writes `bytes` at `path` (`invoices/<order>.pdf`), replacing what was there: writing the
    /// same document twice leaves one.
    /// A client span `storage put` covers the write.
    pub async fn put(&self, path: &str, bytes: Vec<u8>) -> Result<Stored, object_store::Error> {
        let size = bytes.len();
        let span = tracing::info_span!(
            "storage",
            otel.name = "storage put",
            otel.kind = "client",
            storage = %self.describe,
            storage.path = path,
            storage.size = size,
            otel.status_code = tracing::field::Empty,
        );
        let written = async {
            self.store
                .put(&object_path(path)?, PutPayload::from(bytes))
                .await
        }
        .instrument(span.clone())
        .await;
        if written.is_err() {
            span.record("otel.status_code", "ERROR");
        }
        written?;
        Ok(Stored {
            path: path.to_owned(),
            size,
        })
    }

    /// The bytes at `path`, or `None` when there is nothing there.
    pub async fn get(&self, path: &str) -> Result<Option<Vec<u8>>, object_store::Error> {
        match self.store.get(&object_path(path)?).await {
            Ok(found) => Ok(Some(found.bytes().await?.to_vec())),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// A path of ours as an object path; one with `..` or empty parts is refused.
fn object_path(path: &str) -> Result<Path, object_store::Error> {
    Path::parse(path).map_err(|e| object_store::Error::Generic {
        store: "documents",
        source: Box::new(e),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(pairs: &[(&str, &str)]) -> Result<StorageSettings, ConfigError> {
        StorageSettings::read(&Env::from_pairs(pairs.iter().copied()))
    }

    #[test]
    fn reads_a_directory_or_a_bucket() {
        let dir = read(&[("STORAGE_DIR", "/srv/docs")]).unwrap();
        assert_eq!(
            dir.location,
            Some(StorageLocation::Dir(PathBuf::from("/srv/docs")))
        );
        let file = read(&[("STORAGE_URL", "file:///srv/docs")]).unwrap();
        assert_eq!(file.location, dir.location);
        let s3 = read(&[
            ("STORAGE_URL", "s3://shop-docs/prod/"),
            ("AWS_ENDPOINT", "http://127.0.0.1:9000"),
            ("AWS_ALLOW_HTTP", "true"),
        ])
        .unwrap();
        assert_eq!(
            s3.location,
            Some(StorageLocation::S3 {
                bucket: "shop-docs".to_owned(),
                prefix: "prod".to_owned()
            })
        );
        assert!(s3.allow_http);
        assert!(read(&[]).unwrap().location.is_none());
    }

    #[test]
    fn names_the_variable_of_a_bad_location() {
        for pairs in [
            &[("STORAGE_URL", "ftp://x/y")][..],
            &[("STORAGE_URL", "s3:///prefix")][..],
            &[("STORAGE_URL", "file://relative")][..],
            &[("STORAGE_URL", "s3://b"), ("STORAGE_DIR", "/d")][..],
        ] {
            let err = read(pairs).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(err.contains("STORAGE_URL"), "{pairs:?}: {err}");
        }
    }

    #[tokio::test]
    async fn a_directory_store_keeps_what_is_put_and_answers_none_for_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let storage = StorageSettings::dir(dir.path().join("docs"))
            .open()
            .unwrap()
            .unwrap();
        let stored = storage
            .put("invoices/a.pdf", b"%PDF-1.7".to_vec())
            .await
            .unwrap();
        assert_eq!(stored.size, 8);
        assert_eq!(
            storage.get("invoices/a.pdf").await.unwrap().as_deref(),
            Some(&b"%PDF-1.7"[..])
        );
        assert!(dir.path().join("docs/invoices/a.pdf").is_file());
        assert_eq!(storage.get("invoices/b.pdf").await.unwrap(), None);
        assert_eq!(storage.check().await, Ok(()));
        assert!(storage.put("../escape.pdf", Vec::new()).await.is_err());
    }
}
