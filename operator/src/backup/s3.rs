//! An S3-compatible bucket as a store. Requests are signed by rusty-s3 and sent with reqwest.
//! A small artifact is one PUT; a larger one is a multipart upload whose object appears only
//! when it is completed, so a reader sees it whole or not at all. Parts grow with the part
//! number (see [`super::parts`]); one at a time is held, in memory up to 32 MiB and in a
//! temporary file above, so memory stays flat. A run
//! killed mid-upload leaves a marker naming its upload; the next run's sweep aborts that
//! upload and removes the marker.

use std::time::Duration;

use futures::StreamExt;
use rusty_s3::actions::{CreateMultipartUpload, ListObjectsV2};
use rusty_s3::{Bucket, Credentials, S3Action, UrlStyle};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::parts::{MAX_PARTS, PARTS, Part, PartPlan};
use super::store::{StoreError, TEMP};

/// Signed URLs live this long: enough for one part or one listing.
const SIGNED: Duration = Duration::from_secs(3600);
/// A bucket and a key prefix (`<prefix>/<namespace>/<backup>`).
#[derive(Clone)]
pub struct S3Store {
    bucket: Bucket,
    creds: Credentials,
    prefix: String,
    http: reqwest::Client,
    parts: PartPlan,
}

impl std::fmt::Debug for S3Store {
    // Credentials never reach a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "s3://{}/{}", self.bucket.name(), self.prefix)
    }
}

fn fail(what: &str, e: reqwest::Error) -> StoreError {
    // Signed URLs carry the access key id and a signature: never in a message.
    StoreError::S3(format!("{what}: {}", e.without_url()))
}

async fn ok(
    what: &str,
    r: Result<reqwest::Response, reqwest::Error>,
) -> Result<reqwest::Response, StoreError> {
    let r = r.map_err(|e| fail(what, e))?;
    if r.status().is_success() {
        return Ok(r);
    }
    let status = r.status();
    let body = r.text().await.unwrap_or_default();
    let code = body.split("<Code>").nth(1).and_then(|s| s.split("</Code>").next()).unwrap_or("");
    let hint = match code {
        "NoSuchBucket" => ": the bucket in spec.destination.s3.bucket does not exist; create it first",
        "AccessDenied" | "InvalidAccessKeyId" | "SignatureDoesNotMatch" => {
            ": check the keys in spec.destination.s3.credentialsSecretRef"
        }
        _ => "",
    };
    Err(StoreError::S3(format!("{what}: HTTP {status} {code}{hint}")))
}

impl S3Store {
    /// `endpoint` (AWS's regional endpoint when absent; path-style addressing otherwise).
    pub fn new(
        endpoint: Option<&str>,
        region: Option<&str>,
        bucket: &str,
        prefix: String,
        (key, secret): (String, String),
    ) -> Result<Self, StoreError> {
        let region = region.unwrap_or("us-east-1").to_owned();
        let (url, style) = match endpoint {
            Some(e) => (e.to_owned(), UrlStyle::Path),
            None => (format!("https://s3.{region}.amazonaws.com"), UrlStyle::VirtualHost),
        };
        let url = url.parse().map_err(|e| StoreError::S3(format!("spec.destination.s3.endpoint: {e}")))?;
        let bucket = Bucket::new(url, style, bucket.to_owned(), region)
            .map_err(|e| StoreError::S3(format!("spec.destination.s3: {e}")))?;
        let http = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(Duration::from_secs(15))
            .build()
            .map_err(|e| fail("building the HTTP client", e))?;
        Ok(Self { bucket, creds: Credentials::new(key, secret), prefix, http, parts: PARTS })
    }

    /// The same store cutting uploads by `plan` (tests use small parts to reach the spooled
    /// ones).
    pub fn with_parts(self, plan: PartPlan) -> Self {
        Self { parts: plan, ..self }
    }

    /// The store for Backup `ns/name` in destination `d`, with the keys of its credentials
    /// Secret (`accessKeyId`, `secretAccessKey`).
    pub fn for_backup(
        d: &crate::api::backup::S3Destination,
        ns: &str,
        name: &str,
        creds: (String, String),
    ) -> Result<Self, StoreError> {
        let prefix = match d.prefix.as_deref().map(|p| p.trim_matches('/')).filter(|p| !p.is_empty()) {
            Some(p) => format!("{p}/{ns}/{name}"),
            None => format!("{ns}/{name}"),
        };
        Self::new(d.endpoint.as_deref(), d.region.as_deref(), &d.bucket, prefix, creds)
    }

    fn key(&self, name: &str) -> String {
        format!("{}/{name}", self.prefix)
    }

    async fn put(&self, name: &str, body: Vec<u8>) -> Result<(), StoreError> {
        let url = self.bucket.put_object(Some(&self.creds), &self.key(name)).sign(SIGNED);
        ok(&format!("uploading {name}"), self.http.put(url).body(body).send().await).await.map(drop)
    }

    pub async fn write<R: AsyncRead + Unpin + Send>(
        &self,
        name: &str,
        mut body: R,
    ) -> Result<(), StoreError> {
        let first = self.parts.read(&mut body, 1).await?;
        if first.len() < (self.parts.size)(1) {
            let Part::Memory(bytes) = first else {
                return Err(StoreError::S3("a short first part was spooled (a bug)".into()));
            };
            return self.put(name, bytes).await;
        }
        let key = self.key(name);
        let url = self.bucket.create_multipart_upload(Some(&self.creds), &key).sign(SIGNED);
        let r = ok("starting a multipart upload", self.http.post(url).send().await).await?;
        let text = r.text().await.map_err(|e| fail("starting a multipart upload", e))?;
        let created = CreateMultipartUpload::parse_response(&text)
            .map_err(|e| StoreError::S3(format!("starting a multipart upload: {e}")))?;
        let upload = created.upload_id().to_owned();
        let marker = format!("{TEMP}{name}.upload");
        self.put(&marker, format!("{key}\n{upload}\n").into_bytes()).await?;
        let result = self.parts(&key, &upload, first, &mut body).await;
        if result.is_err() {
            let _ = self.abort(&key, &upload).await;
        }
        self.delete(&marker).await?;
        result
    }

    async fn parts<R: AsyncRead + Unpin>(
        &self,
        key: &str,
        upload: &str,
        first: Part,
        body: &mut R,
    ) -> Result<(), StoreError> {
        let mut etags = Vec::new();
        let mut part = first;
        let mut n: u32 = 1;
        loop {
            let url = self
                .bucket
                .upload_part(Some(&self.creds), key, u16::try_from(n).unwrap_or(u16::MAX), upload)
                .sign(SIGNED);
            let what = format!("uploading part {n}");
            let (body_n, len) = part.body();
            let req = self.http.put(url).header(reqwest::header::CONTENT_LENGTH, len).body(body_n);
            let r = ok(&what, req.send().await).await?;
            let etag = r.headers().get("etag").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
            etags.push(etag);
            n += 1;
            part = self.parts.read(body, n).await?;
            if part.is_empty() {
                break;
            }
            if n > MAX_PARTS {
                return Err(StoreError::S3(format!("the artifact needs more than {MAX_PARTS} parts")));
            }
        }
        let action = self.bucket.complete_multipart_upload(
            Some(&self.creds),
            key,
            upload,
            etags.iter().map(String::as_str),
        );
        let url = action.sign(SIGNED);
        ok("completing the multipart upload", self.http.post(url).body(action.body()).send().await)
            .await
            .map(drop)
    }

    async fn abort(&self, key: &str, upload: &str) -> Result<(), StoreError> {
        let url = self.bucket.abort_multipart_upload(Some(&self.creds), key, upload).sign(SIGNED);
        ok("aborting a multipart upload", self.http.delete(url).send().await).await.map(drop)
    }

    pub async fn read<W: AsyncWrite + Unpin + Send>(
        &self,
        name: &str,
        out: &mut W,
    ) -> Result<u64, StoreError> {
        let url = self.bucket.get_object(Some(&self.creds), &self.key(name)).sign(SIGNED);
        let what = format!("downloading {name}");
        let r = ok(&what, self.http.get(url).send().await).await?;
        let mut stream = r.bytes_stream();
        let mut n = 0u64;
        let broken = |e: std::io::Error| StoreError::S3(format!("{what}: the reader stopped: {e}"));
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| fail(&what, e))?;
            out.write_all(&chunk).await.map_err(broken)?;
            n += chunk.len() as u64;
        }
        out.shutdown().await.map_err(broken)?;
        Ok(n)
    }

    pub async fn list(&self) -> Result<Vec<String>, StoreError> {
        let (mut names, mut token) = (Vec::new(), None::<String>);
        let prefix = format!("{}/", self.prefix);
        loop {
            let mut action = self.bucket.list_objects_v2(Some(&self.creds));
            action.with_prefix(prefix.as_str());
            if let Some(t) = &token {
                action.with_continuation_token(t.as_str());
            }
            let r = ok("listing the bucket", self.http.get(action.sign(SIGNED)).send().await).await?;
            let text = r.text().await.map_err(|e| fail("listing the bucket", e))?;
            let page = ListObjectsV2::parse_response(&text)
                .map_err(|e| StoreError::S3(format!("listing the bucket: {e}")))?;
            names.extend(page.contents.iter().filter_map(|c| c.key.strip_prefix(&prefix)).map(str::to_owned));
            match page.next_continuation_token {
                Some(t) => token = Some(t),
                None => break,
            }
        }
        names.sort();
        Ok(names)
    }

    /// Deletes `name`; for an upload marker, the upload it names is aborted first.
    pub async fn delete(&self, name: &str) -> Result<(), StoreError> {
        if name.starts_with(TEMP) && name.ends_with(".upload") {
            let mut text = Vec::new();
            if self.read(name, &mut text).await.is_ok() {
                let text = String::from_utf8_lossy(&text);
                let mut lines = text.lines();
                if let (Some(key), Some(upload)) = (lines.next(), lines.next()) {
                    // Gone already (completed or aborted) is fine.
                    let _ = self.abort(key, upload).await;
                }
            }
        }
        let url = self.bucket.delete_object(Some(&self.creds), &self.key(name)).sign(SIGNED);
        ok(&format!("deleting {name}"), self.http.delete(url).send().await).await.map(drop)
    }
}
