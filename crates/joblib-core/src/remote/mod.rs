//! The remote cache store: `Memory("s3://bucket/prefix")` (also `gs://`, `az://`).
//!
//! Built on Apache Arrow's `object_store` crate, driven from blocking code through a small
//! tokio runtime owned by each [`RemoteStore`]. The layout and the consistency rules are in
//! `docs/memory.md` ("Sharing a cache between machines"):
//!
//! - an entry is ONE object, `<func>/<args hash>/entry.jrs` ([`entry`]): a checksummed
//!   header with the metadata, then the output in joblib-rs's container format. A PUT (or the
//!   completion of a multipart upload) is atomic, so a reader sees no entry or a whole one;
//! - `<func>/<args hash>.lease` ([`lease`]) is created with `If-None-Match: *` by the one
//!   process that computes a missing entry; it holds an expiry, so a crashed holder blocks
//!   the key only until then;
//! - `<func>/<args hash>.atime` is an empty object rewritten at most once per interval per
//!   process on hits: its `Last-Modified` is the entry's last access for LRU ([`scan`]).

pub mod entry;
pub mod lease;
pub mod scan;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{
    BackoffConfig, GetOptions, GetRange, ObjectMeta, ObjectStore, PutMode, PutOptions, PutPayload,
    RetryConfig, UpdateVersion, WriteMultipart,
};

/// Objects up to this size are written with one PUT; bigger ones with a multipart upload of
/// parts of this size, several in flight.
pub const MULTIPART_THRESHOLD: usize = 16 << 20;
/// Reads fetch the first this many bytes with one GET; the rest of a bigger object is read
/// by concurrent ranged GETs of this size.
pub const RANGE_CHUNK: u64 = 16 << 20;
/// Transfers in flight at once for one large object.
pub const CONCURRENCY: usize = 8;

/// Errors of the remote store.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// A URL whose scheme no remote store handles.
    #[error(
        "unsupported store URL scheme '{0}://' in Memory location (supported: s3://, s3a://, \
         gs://, az://, abfs://, abfss://, adl://, azure://, memory://)"
    )]
    UnknownScheme(String),
    /// A URL that cannot be parsed or lacks a bucket.
    #[error("invalid store URL '{url}': {reason}")]
    InvalidUrl {
        /// The URL given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A `backend_options` key the store does not know.
    #[error("unknown option '{key}' for a {scheme}:// store")]
    UnknownOption {
        /// The option name.
        key: String,
        /// The URL scheme.
        scheme: String,
    },
    /// The object store (network, server or credentials) failed.
    #[error("{op} {key}: {source}")]
    Store {
        /// What was being done.
        op: &'static str,
        /// The object key.
        key: String,
        /// The object store's error.
        #[source]
        source: object_store::Error,
    },
    /// The tokio runtime could not be started.
    #[error("cannot start the I/O runtime: {0}")]
    Runtime(#[source] std::io::Error),
    /// An entry object that is not a whole, intact entry.
    #[error("damaged cache entry {key}: {reason}")]
    Damaged {
        /// The object key.
        key: String,
        /// What is wrong.
        reason: String,
    },
}

impl RemoteError {
    /// Whether this is the object store's "not found".
    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            RemoteError::Store {
                source: object_store::Error::NotFound { .. },
                ..
            }
        )
    }

    /// Whether credentials were refused.
    pub fn is_permission(&self) -> bool {
        matches!(
            self,
            RemoteError::Store {
                source: object_store::Error::PermissionDenied { .. }
                    | object_store::Error::Unauthenticated { .. },
                ..
            }
        )
    }
}

/// Result alias of this module.
pub type Result<T> = std::result::Result<T, RemoteError>;

fn store_err(op: &'static str, key: &Path) -> impl FnOnce(object_store::Error) -> RemoteError {
    let key = key.to_string();
    move |source| RemoteError::Store { op, key, source }
}

/// One object of a listing.
#[derive(Debug, Clone, PartialEq)]
pub struct Listed {
    /// The key relative to the store root, as stored (percent-encoded where needed).
    pub key: String,
    /// Size in bytes.
    pub size: u64,
    /// Last modification, seconds since the epoch.
    pub modified: f64,
}

/// Retry and timeout settings: fail within seconds when the server is gone, rather than
/// retrying for the crate's default three minutes.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// Retries of a failed request (server errors, connection failures).
    pub max_retries: usize,
    /// Longest time spent retrying one request.
    pub retry_timeout: Duration,
    /// Connection timeout (when not given in the options).
    pub connect_timeout: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            max_retries: 3,
            retry_timeout: Duration::from_secs(15),
            connect_timeout: Duration::from_secs(5),
        }
    }
}

/// A bucket (or container) and a prefix in it, with a blocking API.
#[derive(Debug)]
pub struct RemoteStore {
    store: Arc<dyn ObjectStore>,
    root: Path,
    runtime: tokio::runtime::Runtime,
    requests: AtomicU64,
    range_chunk: u64,
}

/// Split `scheme://rest`, lowercasing the scheme; None for a string that is not a URL.
pub fn url_scheme(url: &str) -> Option<String> {
    let (scheme, _) = url.split_once("://")?;
    let mut chars = scheme.chars();
    let first = chars.next()?;
    let valid = first.is_ascii_alphabetic()
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    valid.then(|| scheme.to_ascii_lowercase())
}

fn invalid(url: &str, reason: impl Into<String>) -> RemoteError {
    RemoteError::InvalidUrl {
        url: url.to_owned(),
        reason: reason.into(),
    }
}

macro_rules! build_cloud {
    ($builder:ty, $key:ty, $url:expr, $scheme:expr, $options:expr, $timeouts:expr) => {{
        let mut parsed: Vec<($key, String)> = Vec::new();
        let mut has_connect_timeout = false;
        for (key, value) in $options {
            let lower = key.to_ascii_lowercase();
            has_connect_timeout |= lower.ends_with("connect_timeout");
            let config_key = lower.parse().map_err(|_| RemoteError::UnknownOption {
                key: key.clone(),
                scheme: $scheme.clone(),
            })?;
            parsed.push((config_key, value.clone()));
        }
        if !has_connect_timeout {
            if let Ok(key) = "connect_timeout".parse::<$key>() {
                let seconds = $timeouts.connect_timeout.as_secs().max(1);
                parsed.insert(0, (key, format!("{seconds}s")));
            }
        }
        // The environment first, then these defaults, then the caller's options.
        let builder = <$builder>::from_env()
            .with_retry(RetryConfig {
                backoff: BackoffConfig::default(),
                max_retries: $timeouts.max_retries,
                retry_timeout: $timeouts.retry_timeout,
            })
            .with_url($url);
        let builder = parsed
            .into_iter()
            .fold(builder, |b, (key, value)| b.with_config(key, value));
        let store = builder.build().map_err(|e| invalid($url, e.to_string()))?;
        Arc::new(store) as Arc<dyn ObjectStore>
    }};
}

impl RemoteStore {
    /// Open the store at `url` (`s3://bucket/prefix`, `gs://...`, `az://container/prefix`,
    /// `memory://prefix` for tests). Each cloud's standard environment variables are read
    /// (`AWS_*`, `GOOGLE_*`, `AZURE_*`); `options` (the cloud's config keys, e.g. `endpoint`,
    /// `region`, `access_key_id`, `allow_http`) override them.
    pub fn open(url: &str, options: &[(String, String)], timeouts: Timeouts) -> Result<Self> {
        let scheme = url_scheme(url).ok_or_else(|| invalid(url, "not a scheme://... URL"))?;
        let rest = &url[scheme.len() + 3..];
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let store: Arc<dyn ObjectStore> = match scheme.as_str() {
            "s3" | "s3a" => {
                if bucket.is_empty() {
                    return Err(invalid(url, "no bucket name"));
                }
                build_cloud!(
                    object_store::aws::AmazonS3Builder,
                    object_store::aws::AmazonS3ConfigKey,
                    url,
                    scheme,
                    options,
                    timeouts
                )
            }
            "gs" => {
                if bucket.is_empty() {
                    return Err(invalid(url, "no bucket name"));
                }
                build_cloud!(
                    object_store::gcp::GoogleCloudStorageBuilder,
                    object_store::gcp::GoogleConfigKey,
                    url,
                    scheme,
                    options,
                    timeouts
                )
            }
            "az" | "abfs" | "abfss" | "adl" | "azure" => build_cloud!(
                object_store::azure::MicrosoftAzureBuilder,
                object_store::azure::AzureConfigKey,
                url,
                scheme,
                options,
                timeouts
            ),
            "memory" => {
                if let Some((key, _)) = options.first() {
                    return Err(RemoteError::UnknownOption {
                        key: key.clone(),
                        scheme,
                    });
                }
                Arc::new(object_store::memory::InMemory::new())
            }
            _ => return Err(RemoteError::UnknownScheme(scheme)),
        };
        // The bucket is part of the store for the clouds; for memory:// the whole rest is the
        // prefix.
        let prefix = if scheme == "memory" { rest } else { prefix };
        Self::with_store(store, prefix)
    }

    /// A store over an existing `object_store` (tests, embedding), rooted at `prefix`.
    pub fn with_store(store: Arc<dyn ObjectStore>, prefix: &str) -> Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("joblib-rs-remote")
            .enable_all()
            .build()
            .map_err(RemoteError::Runtime)?;
        Ok(Self {
            store,
            root: Path::from(prefix.trim_matches('/')),
            runtime,
            requests: AtomicU64::new(0),
            range_chunk: RANGE_CHUNK,
        })
    }

    /// Read objects bigger than `bytes` by concurrent ranged GETs of that size (the
    /// default, [`RANGE_CHUNK`]); 0 reads every object with one streaming GET.
    pub fn with_range_chunk(mut self, bytes: u64) -> Self {
        self.range_chunk = bytes;
        self
    }

    /// Requests sent so far (each GET, PUT, HEAD, DELETE, list page and multipart part;
    /// not the retries).
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    fn count(&self, n: u64) {
        self.requests.fetch_add(n, Ordering::Relaxed);
    }

    /// The full object path of `key` (relative to the root, `/`-separated; characters an
    /// object key should not hold are percent-encoded).
    pub fn path(&self, key: &str) -> Path {
        self.root
            .parts()
            .chain(Path::from(key).parts())
            .collect::<Path>()
    }

    /// The full object path of a key returned by [`RemoteStore::list`] (already encoded).
    fn listed_path(&self, key: &str) -> Path {
        // Already encoded: parsed as is (a key that does not parse was not listed by us;
        // encode it like any other).
        let relative = Path::parse(key).unwrap_or_else(|_| Path::from(key));
        self.root.parts().chain(relative.parts()).collect()
    }

    fn relative(&self, path: &Path) -> String {
        let skip = self.root.parts().count();
        path.parts()
            .skip(skip)
            .map(|p| p.as_ref().to_owned())
            .collect::<Vec<_>>()
            .join("/")
    }

    /// The whole object at `key`, or None if there is none. Objects bigger than
    /// [`RANGE_CHUNK`] are read by concurrent ranged GETs.
    pub fn get(&self, key: &str) -> Result<Option<Vec<Bytes>>> {
        let path = self.path(key);
        self.runtime.block_on(self.get_async(&path))
    }

    async fn get_async(&self, path: &Path) -> Result<Option<Vec<Bytes>>> {
        self.count(1);
        let chunk = self.range_chunk;
        let options = GetOptions {
            range: (chunk > 0).then_some(GetRange::Bounded(0..chunk)),
            ..Default::default()
        };
        let first = match self.store.get_opts(path, options).await {
            Ok(found) => found,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            // A zero-length object has no satisfiable range; some servers answer a range
            // with the whole object: read it whole.
            Err(e) if chunk > 0 && is_range_error(&e) => {
                self.count(1);
                return match self.store.get(path).await {
                    Ok(found) => Ok(Some(vec![
                        found.bytes().await.map_err(store_err("read", path))?,
                    ])),
                    Err(object_store::Error::NotFound { .. }) => Ok(None),
                    Err(e) => Err(store_err("read", path)(e)),
                };
            }
            Err(e) => return Err(store_err("read", path)(e)),
        };
        let size = first.meta.size;
        let version = first.meta.e_tag.clone();
        let head = first.bytes().await.map_err(store_err("read", path))?;
        let mut chunks = vec![head];
        let got = chunks[0].len() as u64;
        if got >= size {
            return Ok(Some(chunks));
        }
        let step = chunk.max(1);
        let ranges: Vec<_> = (got..size)
            .step_by(step as usize)
            .map(|start| start..(start + step).min(size))
            .collect();
        self.count(ranges.len() as u64);
        let store = &self.store;
        let rest: Vec<Bytes> = futures::stream::iter(ranges)
            .map(|range| {
                // The same version of the object: a replacement between the first GET and
                // these ones fails them rather than mixing two entries.
                let options = GetOptions {
                    range: Some(GetRange::Bounded(range)),
                    if_match: version.clone(),
                    ..Default::default()
                };
                async move {
                    let part = store.get_opts(path, options).await?;
                    part.bytes().await
                }
            })
            .buffered(CONCURRENCY)
            .try_collect()
            .await
            .map_err(store_err("read", path))?;
        chunks.extend(rest);
        Ok(Some(chunks))
    }

    /// The first `len` bytes of the object at `key` (fewer if it is shorter) and the
    /// object's size, with one ranged GET; None if there is no object.
    pub fn get_prefix(&self, key: &str, len: u64) -> Result<Option<(Bytes, u64)>> {
        let path = self.path(key);
        self.count(1);
        self.runtime.block_on(async {
            let options = GetOptions {
                range: Some(GetRange::Bounded(0..len.max(1))),
                ..Default::default()
            };
            let found = match self.store.get_opts(&path, options).await {
                Ok(found) => found,
                Err(object_store::Error::NotFound { .. }) => return Ok(None),
                // A zero-length object has no satisfiable range: read it whole.
                Err(e) if is_range_error(&e) => {
                    self.count(1);
                    match self.store.get(&path).await {
                        Ok(found) => found,
                        Err(object_store::Error::NotFound { .. }) => return Ok(None),
                        Err(e) => return Err(store_err("read", &path)(e)),
                    }
                }
                Err(e) => return Err(store_err("read", &path)(e)),
            };
            let size = found.meta.size;
            let data = found.bytes().await.map_err(store_err("read", &path))?;
            Ok(Some((data, size)))
        })
    }

    /// Bytes `range` of the object at `key`; None if there is no object.
    pub fn get_range(&self, key: &str, range: std::ops::Range<u64>) -> Result<Option<Bytes>> {
        let path = self.path(key);
        self.count(1);
        self.runtime.block_on(async {
            match self.store.get_range(&path, range).await {
                Ok(data) => Ok(Some(data)),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(store_err("read", &path)(e)),
            }
        })
    }

    /// Write `data` at `key`, replacing any object there. One PUT up to
    /// [`MULTIPART_THRESHOLD`], else a multipart upload (parts in flight concurrently),
    /// visible only once complete.
    pub fn put(&self, key: &str, data: Vec<Bytes>) -> Result<()> {
        let path = self.path(key);
        self.runtime.block_on(self.put_async(&path, data))
    }

    async fn put_async(&self, path: &Path, data: Vec<Bytes>) -> Result<()> {
        let total: usize = data.iter().map(Bytes::len).sum();
        if total <= MULTIPART_THRESHOLD {
            self.count(1);
            self.store
                .put(path, PutPayload::from_iter(data))
                .await
                .map_err(store_err("write", path))?;
            return Ok(());
        }
        let upload = self
            .store
            .put_multipart(path)
            .await
            .map_err(store_err("write", path))?;
        let parts = total.div_ceil(MULTIPART_THRESHOLD) as u64;
        self.count(parts + 2);
        let mut writer = WriteMultipart::new_with_chunk_size(upload, MULTIPART_THRESHOLD);
        for chunk in data {
            if let Err(e) = writer.wait_for_capacity(CONCURRENCY).await {
                // Best effort: the upload is abandoned either way.
                let _ = writer.abort().await;
                return Err(store_err("write", path)(e));
            }
            writer.put(chunk);
        }
        writer.finish().await.map_err(store_err("write", path))?;
        Ok(())
    }

    /// Create `key` holding `data` only if no object is there (`If-None-Match: *`).
    /// Returns whether it was created, and the new object's ETag.
    pub fn put_if_absent(&self, key: &str, data: Bytes) -> Result<(bool, Option<String>)> {
        let path = self.path(key);
        self.runtime
            .block_on(self.put_mode(&path, data, PutMode::Create))
    }

    async fn put_mode(
        &self,
        path: &Path,
        data: Bytes,
        mode: PutMode,
    ) -> Result<(bool, Option<String>)> {
        self.count(1);
        let options = PutOptions {
            mode,
            ..Default::default()
        };
        match self.store.put_opts(path, data.into(), options).await {
            Ok(done) => Ok((true, done.e_tag)),
            Err(
                object_store::Error::AlreadyExists { .. }
                | object_store::Error::Precondition { .. },
            ) => Ok((false, None)),
            Err(e) => Err(store_err("write", path)(e)),
        }
    }

    /// Replace `key` with `data` only if it still is the version `e_tag` (`If-Match`).
    /// Returns whether it was replaced; `Ok(false)` also when the object is gone.
    pub fn replace_if(&self, key: &str, data: Bytes, e_tag: &str) -> Result<bool> {
        let path = self.path(key);
        let mode = PutMode::Update(UpdateVersion {
            e_tag: Some(e_tag.to_owned()),
            version: None,
        });
        self.runtime.block_on(async {
            match self.put_mode(&path, data, mode).await {
                Ok((done, _)) => Ok(done),
                Err(e) if e.is_not_found() => Ok(false),
                Err(e) => Err(e),
            }
        })
    }

    /// A small object with its ETag, or None.
    pub fn get_versioned(&self, key: &str) -> Result<Option<(Bytes, Option<String>)>> {
        let path = self.path(key);
        self.count(1);
        self.runtime.block_on(async {
            match self.store.get(&path).await {
                Ok(found) => {
                    let e_tag = found.meta.e_tag.clone();
                    let data = found.bytes().await.map_err(store_err("read", &path))?;
                    Ok(Some((data, e_tag)))
                }
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(store_err("read", &path)(e)),
            }
        })
    }

    /// Size and modification time of `key`, or None.
    pub fn head(&self, key: &str) -> Result<Option<Listed>> {
        let path = self.path(key);
        self.count(1);
        self.runtime.block_on(async {
            match self.store.head(&path).await {
                Ok(meta) => Ok(Some(self.listed(&meta))),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(store_err("stat", &path)(e)),
            }
        })
    }

    /// Remove `key`; removing a missing object is not an error.
    pub fn delete(&self, key: &str) -> Result<()> {
        let path = self.path(key);
        self.count(1);
        self.runtime.block_on(async {
            match self.store.delete(&path).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(e) => Err(store_err("remove", &path)(e)),
            }
        })
    }

    fn listed(&self, meta: &ObjectMeta) -> Listed {
        Listed {
            key: self.relative(&meta.location),
            size: meta.size,
            modified: meta.last_modified.timestamp_micros() as f64 / 1e6,
        }
    }

    /// Every object under `prefix` (relative to the root; "" for all), recursively.
    pub fn list(&self, prefix: &str) -> Result<Vec<Listed>> {
        let path = self.path(prefix);
        self.count(1);
        let found: Vec<ObjectMeta> = self
            .runtime
            .block_on(self.store.list(Some(&path)).try_collect())
            .map_err(store_err("list", &path))?;
        // S3 lists 1,000 keys per page.
        self.count(found.len() as u64 / 1000);
        Ok(found.iter().map(|m| self.listed(m)).collect())
    }

    /// Remove the listed keys (as returned by [`RemoteStore::list`]), in bulk requests
    /// where the store has them. Keys already gone count as removed.
    pub fn delete_listed(&self, keys: &[String]) -> Result<()> {
        if keys.is_empty() {
            return Ok(());
        }
        let paths: Vec<Path> = keys.iter().map(|k| self.listed_path(k)).collect();
        self.count(paths.len().div_ceil(1000) as u64);
        self.runtime.block_on(async {
            let input = futures::stream::iter(paths.into_iter().map(Ok)).boxed();
            let mut results = self.store.delete_stream(input);
            while let Some(result) = results.next().await {
                match result {
                    Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
                    Err(e) => {
                        return Err(RemoteError::Store {
                            op: "remove",
                            key: self.root.to_string(),
                            source: e,
                        });
                    }
                }
            }
            Ok(())
        })
    }

    /// Remove every object under `prefix` (relative to the root; "" for the whole store).
    pub fn delete_prefix(&self, prefix: &str) -> Result<usize> {
        let keys: Vec<String> = self.list(prefix)?.into_iter().map(|l| l.key).collect();
        self.delete_listed(&keys)?;
        Ok(keys.len())
    }
}

fn is_range_error(e: &object_store::Error) -> bool {
    let text = e.to_string();
    text.contains("416") || text.contains("Range") || text.contains("range")
}

#[cfg(test)]
mod tests;
