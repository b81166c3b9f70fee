//! A bucket of S3-compatible object storage (AWS S3, MinIO, Ceph RGW and
//! the like) holding the hub's artifacts: objects put, read and checked
//! for with path-style requests (`{endpoint}/{bucket}/{key}`) signed with
//! AWS Signature Version 4. The payload's SHA-256 is signed too, so the
//! store refuses a body changed on the way.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ring::hmac;
use strata_ota::{hex, sha256_hex};

use crate::config::S3Config;
use crate::error::{Error, Result};

/// The bucket and how to reach it.
pub struct S3Bucket {
    /// `scheme://host[:port]`, without a trailing slash.
    endpoint: String,
    bucket: String,
    region: String,
    prefix: String,
    access_key_id: String,
    secret_access_key: String,
    agent: ureq::Agent,
}

impl std::fmt::Debug for S3Bucket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret.
        f.debug_struct("S3Bucket")
            .field("place", &self.describe())
            .finish_non_exhaustive()
    }
}

/// Tries of a request S3 answers 5xx (or that cannot reach it): the waits
/// between them are 0.1, 0.3 and 0.9 s.
const ATTEMPTS: u32 = 4;

/// What a request came back with: its status and body.
struct Reply {
    status: u16,
    body: Vec<u8>,
}

impl S3Bucket {
    /// The bucket of `config`, checked to exist and to take our
    /// credentials (a clear error at start rather than at the first
    /// upload).
    pub fn open(config: &S3Config) -> Result<S3Bucket> {
        config.check().map_err(Error::BadRequest)?;
        let (access_key_id, secret_access_key) = config.credentials().map_err(Error::BadRequest)?;
        let endpoint = config.endpoint.trim_end_matches('/').to_owned();
        // Artifacts can be large (firmware bundles): a transfer may take
        // minutes, but a store that does not answer is given up quickly.
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(10)))
            .timeout_recv_response(Some(Duration::from_secs(60)))
            .timeout_global(Some(Duration::from_secs(600)))
            .tls_config(
                ureq::tls::TlsConfig::builder()
                    .root_certs(ureq::tls::RootCerts::WebPki)
                    .build(),
            )
            .build()
            .into();
        let bucket = S3Bucket {
            endpoint,
            bucket: config.bucket.clone(),
            region: config.region.clone(),
            prefix: config.prefix.clone(),
            access_key_id,
            secret_access_key,
            agent,
        };
        let reply = bucket.request("HEAD", "", &[])?;
        match reply.status {
            200 => Ok(bucket),
            404 => Err(Error::BadRequest(format!(
                "S3 bucket {:?} does not exist at {}: create it first",
                bucket.bucket, bucket.endpoint
            ))),
            403 => Err(Error::BadRequest(format!(
                "S3 at {} refuses access to bucket {:?} with access key {:?}",
                bucket.endpoint, bucket.bucket, bucket.access_key_id
            ))),
            status => Err(Error::Unavailable(format!(
                "S3 at {} answered {status} for bucket {:?}",
                bucket.endpoint, bucket.bucket
            ))),
        }
    }

    /// Where the objects are: `s3://bucket/prefix` at the endpoint.
    pub fn describe(&self) -> String {
        format!("{} s3://{}/{}", self.endpoint, self.bucket, self.prefix)
    }

    /// Whether the object `name` exists.
    pub fn exists(&self, name: &str) -> Result<bool> {
        let reply = self.request("HEAD", &self.key(name), &[])?;
        match reply.status {
            200 => Ok(true),
            404 => Ok(false),
            status => Err(self.failed("check", name, status, &reply.body)),
        }
    }

    /// Stores `bytes` as the object `name`.
    pub fn put(&self, name: &str, bytes: &[u8]) -> Result<()> {
        let reply = self.request("PUT", &self.key(name), bytes)?;
        match reply.status {
            200 => Ok(()),
            status => Err(self.failed("store", name, status, &reply.body)),
        }
    }

    /// The object `name` (`NotFound` when there is none).
    pub fn get(&self, name: &str) -> Result<Vec<u8>> {
        let reply = self.request("GET", &self.key(name), &[])?;
        match reply.status {
            200 => Ok(reply.body),
            404 => Err(Error::NotFound(format!("no artifact {name}"))),
            status => Err(self.failed("read", name, status, &reply.body)),
        }
    }

    fn key(&self, name: &str) -> String {
        format!("{}sha256/{name}", self.prefix)
    }

    fn failed(&self, what: &str, name: &str, status: u16, body: &[u8]) -> Error {
        let detail = String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned();
        Error::Unavailable(format!(
            "cannot {what} artifact {name} in {}: S3 answered {status} {detail}",
            self.describe()
        ))
    }

    /// A signed request for `key` in the bucket (the bucket itself when
    /// `key` is empty), made again, after a short wait, while S3 answers
    /// 5xx or cannot be reached: object stores do that now and then under
    /// load, and every request here is idempotent (HEAD, GET, PUT of
    /// content-addressed objects).
    fn request(&self, method: &str, key: &str, body: &[u8]) -> Result<Reply> {
        let mut wait = Duration::from_millis(100);
        let mut attempt = 1;
        loop {
            let reply = self.request_once(method, key, body);
            let transient = match &reply {
                Ok(r) => r.status >= 500,
                Err(_) => true,
            };
            if !transient || attempt == ATTEMPTS {
                return reply;
            }
            std::thread::sleep(wait);
            wait *= 3;
            attempt += 1;
        }
    }

    /// One signed request (see [`S3Bucket::request`]).
    fn request_once(&self, method: &str, key: &str, body: &[u8]) -> Result<Reply> {
        let path = if key.is_empty() {
            format!("/{}", self.bucket)
        } else {
            format!("/{}/{}", self.bucket, uri_encode(key))
        };
        let payload_sha = sha256_hex(body);
        let (amz_date, authorization) = self.sign(method, &path, &payload_sha, SystemTime::now());
        let url = format!("{}{path}", self.endpoint);
        let unavailable = |e: ureq::Error| {
            Error::Unavailable(format!(
                "cannot reach S3 at {} ({method} {path}): {e}",
                self.endpoint
            ))
        };
        let builder = ureq::http::Request::builder()
            .method(method)
            .uri(&url)
            .header("x-amz-date", &amz_date)
            .header("x-amz-content-sha256", &payload_sha)
            .header("authorization", &authorization);
        let request = builder
            .body(body.to_vec())
            .map_err(|e| Error::Unavailable(format!("cannot build the S3 request {url}: {e}")))?;
        let mut response = self.agent.run(request).map_err(unavailable)?;
        let status = response.status().as_u16();
        let body = if method == "HEAD" {
            Vec::new()
        } else {
            response
                .body_mut()
                .with_config()
                .limit(u64::MAX)
                .read_to_vec()
                .map_err(unavailable)?
        };
        Ok(Reply { status, body })
    }

    /// The `x-amz-date` and `Authorization` headers of a request at `now`
    /// (Signature Version 4, signing `host`, `x-amz-content-sha256` and
    /// `x-amz-date`; `path` already escaped as [`uri_encode`] does).
    fn sign(
        &self,
        method: &str,
        path: &str,
        payload_sha: &str,
        now: SystemTime,
    ) -> (String, String) {
        let amz_date = amz_date(now);
        let day = &amz_date[..8];
        // `host[:port]`, as the `Host` header carries it.
        let host = self.endpoint.split_once("://").map_or("", |(_, h)| h);
        let signed_headers = "host;x-amz-content-sha256;x-amz-date";
        let canonical = format!(
            "{method}\n{path}\n\nhost:{host}\nx-amz-content-sha256:{payload_sha}\nx-amz-date:{amz_date}\n\n{signed_headers}\n{payload_sha}"
        );
        let scope = format!("{day}/{}/s3/aws4_request", self.region);
        let to_sign = format!(
            "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
            sha256_hex(canonical.as_bytes())
        );
        let mut key = format!("AWS4{}", self.secret_access_key).into_bytes();
        for part in [day, self.region.as_str(), "s3", "aws4_request"] {
            key = hmac_sha256(&key, part.as_bytes());
        }
        let signature = hex(&hmac_sha256(&key, to_sign.as_bytes()));
        let authorization = format!(
            "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed_headers}, Signature={signature}",
            self.access_key_id
        );
        (amz_date, authorization)
    }
}

/// A key as Signature Version 4 writes it in a path: every byte but the
/// unreserved ones (`A-Z a-z 0-9 - . _ ~`) and `/` as `%XX`.
fn uri_encode(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for b in key.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'/') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> Vec<u8> {
    hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), data)
        .as_ref()
        .to_vec()
}

/// `YYYYMMDDTHHMMSSZ` in UTC.
fn amz_date(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let t = i64::try_from(secs)
        .ok()
        .and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok())
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bucket(endpoint: &str) -> S3Bucket {
        S3Bucket {
            endpoint: endpoint.into(),
            bucket: "examplebucket".into(),
            region: "us-east-1".into(),
            prefix: String::new(),
            access_key_id: "AKIAIOSFODNN7EXAMPLE".into(),
            secret_access_key: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".into(),
            // As `open` makes it: statuses are answers, not errors.
            agent: ureq::Agent::config_builder()
                .http_status_as_error(false)
                .build()
                .into(),
        }
    }

    /// A server answering each request with the next status of `statuses`
    /// (an empty body); returns its address and the count of requests.
    fn server(statuses: Vec<u16>) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
        use std::io::{Read as _, Write as _};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = format!("http://{}", listener.local_addr().unwrap());
        let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let seen = count.clone();
        std::thread::spawn(move || {
            for (stream, status) in listener.incoming().zip(statuses) {
                let mut stream = stream.unwrap();
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap_or(0) == 1 {
                    head.push(byte[0]);
                }
                let text = String::from_utf8_lossy(&head).to_ascii_lowercase();
                let length: usize = text
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .map_or(0, |v| v.trim().parse().unwrap());
                let mut body = vec![0u8; length];
                stream.read_exact(&mut body).unwrap();
                seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
            }
        });
        (addr, count)
    }

    #[test]
    fn a_5xx_is_tried_again_and_a_4xx_is_not() {
        let (addr, count) = server(vec![500, 503, 200]);
        bucket(&addr).put("a.onnx", b"model").unwrap();
        assert_eq!(count.load(std::sync::atomic::Ordering::SeqCst), 3);
        let (addr, count) = server(vec![403, 200]);
        let err = bucket(&addr).put("a.onnx", b"model").unwrap_err();
        assert!(err.to_string().contains("403"), "{err}");
        assert_eq!(count.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[test]
    fn keys_are_escaped_as_signature_version_4_wants() {
        assert_eq!(uri_encode("hub/sha256/ab-c_d.e~f"), "hub/sha256/ab-c_d.e~f");
        assert_eq!(uri_encode("a b+c:é"), "a%20b%2Bc%3A%C3%A9");
    }

    #[test]
    fn dates_are_utc_calendar_days() {
        let at = |s: u64| amz_date(UNIX_EPOCH + Duration::from_secs(s));
        assert_eq!(at(0), "19700101T000000Z");
        assert_eq!(at(1_369_353_600), "20130524T000000Z");
        assert_eq!(at(951_782_400 + 3_723), "20000229T010203Z");
        assert_eq!(at(4_102_444_799), "20991231T235959Z");
    }

    /// The same request as signed by the AWS SDK for Python: botocore
    /// 1.44.18's `S3SigV4Auth`, credentials and time as here, the clock
    /// patched to 2013-05-24 00:00:00 UTC.
    #[test]
    fn signs_as_the_aws_sdk_does() {
        let b = bucket("http://127.0.0.1:9000");
        let at = UNIX_EPOCH + Duration::from_secs(1_369_353_600);
        let (date, authorization) = b.sign(
            "PUT",
            "/examplebucket/sha256/abc",
            &sha256_hex(b"model bytes"),
            at,
        );
        assert_eq!(date, "20130524T000000Z");
        assert_eq!(
            authorization,
            format!(
                "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, \
                 SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature={}",
                BOTOCORE_SIGNATURE
            )
        );
    }

    /// botocore's signature of the request of `signs_as_the_aws_sdk_does`.
    const BOTOCORE_SIGNATURE: &str =
        "5a950fb70a64fb8a5ac33f42eecc18e1458550164d555bd3838bddc6b1920464";
}
