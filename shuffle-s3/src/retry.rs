//! Retries: the only retry loop between Shovel and S3.
//!
//! The SDK's own retries are disabled (`RetryConfig::disabled()` on the
//! client) so every attempt passes through `retry()` here and is counted: each
//! attempt increments its request-type counter, each retry `retries`, and
//! each retry caused by throttling also `throttles`.
//!
//! What is retried (with exponential backoff and full jitter:
//! `sleep = uniform(0, min(max_backoff, initial_backoff * 2^retry))`):
//! - 5xx responses (500 InternalError, 503 ServiceUnavailable/SlowDown, ...),
//! - throttling (429, `SlowDown`, `Throttling`, `RequestLimitExceeded`, ...),
//! - `RequestTimeout` and connection-level failures: refused or reset
//!   connections, connect/attempt timeouts, truncated responses and bodies.
//!
//! What is never retried:
//! - answers that are not S3's ([`Kind::NotS3`]): a response without an S3
//!   error code whose body is an HTML page or anything else that is not
//!   XML, or whose `Content-Type` is HTML (a web server, a proxy's error
//!   page, a wrong port), on every request type, including a success
//!   status whose body cannot be parsed. The error names the endpoint and
//!   says it does not answer like S3: retrying a web server 360 times (as
//!   a 501 once was) only hides the wrong `s3.endpoint`;
//! - 501 Not Implemented (the request will not start working);
//! - other 4xx (AccessDenied, NoSuchBucket, bad credentials, ...), which
//!   fail at once with an error naming bucket, key and the likely fix.
//!
//! Retrying stops at `max_attempts` or when the next attempt could not start
//! before `total_deadline`; an attempt in flight is cut off at the deadline.

use std::future::Future;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_smithy_runtime_api::http::Response as HttpResponse;
use rand::Rng;
use shuffle_core::metrics::{add, RequestMetrics};
use shuffle_core::{Error, Result};
use tokio::time::Instant;

/// How requests to S3 are retried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryConfig {
    /// Attempts per request, including the first (1 = never retry).
    pub max_attempts: u32,
    /// Backoff cap of the first retry; doubles per retry up to `max_backoff`.
    pub initial_backoff: Duration,
    /// Largest backoff cap.
    pub max_backoff: Duration,
    /// Time budget of one request across all its attempts and backoffs.
    pub total_deadline: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            max_attempts: 10,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(10),
            total_deadline: Duration::from_secs(120),
        }
    }
}

impl RetryConfig {
    /// One attempt per request.
    pub fn no_retries() -> Self {
        Self {
            max_attempts: 1,
            ..Self::default()
        }
    }

    /// Checks the values make sense.
    pub fn validate(&self) -> Result<()> {
        if self.max_attempts == 0 {
            return Err(Error::config(
                "s3.retry.max_attempts",
                "must be at least 1 (1 disables retries)",
            ));
        }
        if self.initial_backoff > self.max_backoff {
            return Err(Error::config(
                "s3.retry.initial_backoff",
                format!(
                    "{:?} is larger than s3.retry.max_backoff ({:?}); lower it or raise the maximum",
                    self.initial_backoff, self.max_backoff
                ),
            ));
        }
        if self.total_deadline.is_zero() {
            return Err(Error::config(
                "s3.retry.total_deadline",
                "must be positive, e.g. 120s",
            ));
        }
        Ok(())
    }

    /// The backoff before retry number `retry` (0-based): full jitter.
    pub fn backoff(&self, retry: u32) -> Duration {
        let cap = self
            .initial_backoff
            .saturating_mul(1u32.checked_shl(retry.min(31)).unwrap_or(u32::MAX))
            .min(self.max_backoff);
        let nanos = u64::try_from(cap.as_nanos()).unwrap_or(u64::MAX);
        if nanos == 0 {
            return Duration::ZERO;
        }
        Duration::from_nanos(rand::thread_rng().gen_range(0..=nanos))
    }
}

/// How a failed attempt is treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Throttled: retried and counted in `throttles`.
    Throttle,
    /// 5xx, timeouts, resets, truncated responses: retried.
    Transient,
    /// NoSuchKey (or a bare 404 on an object).
    NotFound,
    /// 412 PreconditionFailed or 409 conditional-write conflict.
    Precondition,
    /// 416: the range starts past the end of the object.
    InvalidRange,
    /// The multipart upload is gone (aborted, or completed by an earlier attempt).
    NoSuchUpload,
    /// The response is not an S3 answer (HTML page, non-XML body): never
    /// retried, reported as a wrong endpoint.
    NotS3,
    /// Anything else: not retried.
    Fatal,
}

impl Kind {
    fn retryable(self) -> bool {
        matches!(self, Kind::Throttle | Kind::Transient)
    }
}

pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// One failed attempt, classified.
#[derive(Debug)]
pub(crate) struct Failure {
    pub kind: Kind,
    pub status: Option<u16>,
    pub code: Option<String>,
    /// Full error chain, for messages.
    pub detail: String,
    /// The request never got a response (connect failure, reset, timeout).
    pub no_response: bool,
    pub source: Option<BoxError>,
}

const THROTTLE_CODES: &[&str] = &[
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottled",
    "RequestThrottledException",
    "TooManyRequests",
    "TooManyRequestsException",
    "RequestLimitExceeded",
    "BandwidthLimitExceeded",
    "LimitExceededException",
    "ProvisionedThroughputExceededException",
    "PriorRequestNotComplete",
];

const TRANSIENT_CODES: &[&str] = &[
    "InternalError",
    "ServiceUnavailable",
    "RequestTimeout",
    "RequestTimeoutException",
    "IDPCommunicationError",
    "OperationAborted",
];

/// Classifies a response by HTTP status and S3 error code.
pub(crate) fn classify(status: Option<u16>, code: Option<&str>) -> Kind {
    if let Some(code) = code {
        if THROTTLE_CODES.contains(&code) {
            return Kind::Throttle;
        }
        if TRANSIENT_CODES.contains(&code) {
            return Kind::Transient;
        }
        match code {
            "NoSuchKey" => return Kind::NotFound,
            "NoSuchUpload" => return Kind::NoSuchUpload,
            "PreconditionFailed" | "ConditionalRequestConflict" => return Kind::Precondition,
            "InvalidRange" => return Kind::InvalidRange,
            _ => {}
        }
    }
    match status {
        Some(429) | Some(503) => Kind::Throttle,
        Some(501) => Kind::Fatal,
        Some(s) if s >= 500 => Kind::Transient,
        Some(412) => Kind::Precondition,
        Some(416) => Kind::InvalidRange,
        // A 404 without a parsed code (HEAD responses have no body).
        Some(404) if code.is_none() || code == Some("NotFound") => Kind::NotFound,
        Some(409) if code.is_none() => Kind::Precondition,
        _ => Kind::Fatal,
    }
}

/// Why `raw` is not an S3 answer, e.g. `HTTP 501, text/html body`, or
/// `None` when it may be one. Only called for responses without a parsed
/// S3 error code: S3 sends errors as XML (`<?xml ...><Error>`) and HEAD
/// errors without a body, never HTML.
pub(crate) fn not_s3(raw: &HttpResponse) -> Option<String> {
    let status = raw.status().as_u16();
    let content_type = raw
        .headers()
        .get("content-type")
        .map(|c| c.trim().to_ascii_lowercase())
        .unwrap_or_default();
    let body = raw.body().bytes().unwrap_or(&[]);
    let text = body.trim_ascii_start();
    let xml = text.starts_with(b"<?xml") || text.starts_with(b"<Error");
    let html = content_type.contains("html")
        || (!xml && {
            let head = String::from_utf8_lossy(&text[..text.len().min(64)]).to_ascii_lowercase();
            head.starts_with("<!doctype") || head.starts_with("<html")
        });
    if !html && (text.is_empty() || xml) {
        return None;
    }
    let kind = if html {
        "an HTML".to_string()
    } else if content_type.is_empty() {
        "a non-XML".to_string()
    } else {
        format!("a non-XML {content_type}")
    };
    Some(format!("HTTP {status} with {kind} body"))
}

impl Failure {
    #[cfg(test)]
    pub(crate) fn new(kind: Kind, detail: impl Into<String>) -> Self {
        Self {
            kind,
            status: None,
            code: None,
            detail: detail.into(),
            no_response: false,
            source: None,
        }
    }

    /// The response body broke off while being read (reset, truncated): retried.
    pub(crate) fn body(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self {
            kind: Kind::Transient,
            status: None,
            code: None,
            detail: format!(
                "reading the response body failed: {}",
                DisplayErrorContext(&e)
            ),
            no_response: true,
            source: Some(Box::new(e)),
        }
    }

    /// The store's I/O runtime stopped under a request (the store was
    /// dropped while the request ran): not retried.
    pub(crate) fn stopped() -> Self {
        Self {
            kind: Kind::Fatal,
            status: None,
            code: None,
            detail: "the S3 store's I/O runtime stopped (the store was dropped) during the request"
                .to_string(),
            no_response: true,
            source: None,
        }
    }

    fn attempt_timeout(limit: Duration) -> Self {
        Self {
            kind: Kind::Transient,
            status: None,
            code: None,
            detail: format!("no complete response within {limit:?} (s3.request_timeout / s3.retry.total_deadline)"),
            no_response: true,
            source: None,
        }
    }

    /// `HTTP 503 SlowDown` or the like, for messages.
    pub(crate) fn short(&self) -> String {
        match (self.status, &self.code) {
            (Some(s), Some(c)) => format!("HTTP {s} {c}"),
            (Some(s), None) => format!("HTTP {s}"),
            (None, Some(c)) => c.clone(),
            (None, None) => "no response".to_string(),
        }
    }
}

impl<E> From<SdkError<E, HttpResponse>> for Failure
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    fn from(err: SdkError<E, HttpResponse>) -> Self {
        let (kind, status, code, no_response, detail) = match &err {
            SdkError::ServiceError(se)
                if se.err().code().is_none() && not_s3(se.raw()).is_some() =>
            {
                let why = not_s3(se.raw()).unwrap_or_default();
                (Kind::NotS3, status_of(se.raw()), None, false, why)
            }
            SdkError::ResponseError(re) if not_s3(re.raw()).is_some() => {
                let why = not_s3(re.raw()).unwrap_or_default();
                (Kind::NotS3, status_of(re.raw()), None, false, why)
            }
            SdkError::ServiceError(se) => {
                let status = status_of(se.raw());
                let code = se.err().code().map(str::to_string);
                let detail = match (se.err().code(), se.err().message()) {
                    (Some(c), Some(m)) => format!("{c}: {m}"),
                    (Some(c), None) => c.to_string(),
                    (None, Some(m)) => m.to_string(),
                    (None, None) => DisplayErrorContext(se.err()).to_string(),
                };
                let kind = match (status, code.as_deref()) {
                    // A 404 without an S3 error code is not S3 saying "no such
                    // key" (HEAD's code-less 404 is parsed as `NotFound`).
                    (Some(404), None) => Kind::Fatal,
                    _ => classify(status, code.as_deref()),
                };
                let detail = if kind == Kind::Fatal && code.is_none() {
                    format!(
                        "HTTP {} without an S3 error code ({detail}); is s3.endpoint an S3 service, \
                         and is s3.path_style right for it?",
                        status.unwrap_or(0)
                    )
                } else {
                    detail
                };
                (kind, status, code, false, detail)
            }
            SdkError::ResponseError(re) => {
                // A response arrived but could not be read or parsed
                // (truncated, reset mid-body): retry unless it was a clean 4xx.
                let status = status_of(re.raw());
                let kind = match status {
                    Some(s) if (400..500).contains(&s) && s != 429 => Kind::Fatal,
                    _ => Kind::Transient,
                };
                let detail = format!(
                    "unreadable response (HTTP {}): {}",
                    status.unwrap_or(0),
                    std::error::Error::source(&err)
                        .map(|e| DisplayErrorContext(e).to_string())
                        .unwrap_or_default()
                );
                (kind, status, None, false, detail)
            }
            SdkError::TimeoutError(_) => {
                (Kind::Transient, None, None, true, "timed out".to_string())
            }
            SdkError::DispatchFailure(d) => {
                let kind = if d.is_user() {
                    Kind::Fatal
                } else {
                    Kind::Transient
                };
                let detail = match d.as_connector_error() {
                    Some(c) => DisplayErrorContext(c).to_string(),
                    None => DisplayErrorContext(&err).to_string(),
                };
                (kind, None, None, true, detail)
            }
            _ => (
                Kind::Fatal,
                None,
                None,
                false,
                DisplayErrorContext(&err).to_string(),
            ),
        };
        Self {
            kind,
            status,
            code,
            detail,
            no_response,
            source: Some(Box::new(err)),
        }
    }
}

fn status_of(raw: &HttpResponse) -> Option<u16> {
    Some(raw.status().as_u16())
}

/// The outcome of a request that did not succeed.
#[derive(Debug)]
pub(crate) struct Exhausted {
    pub last: Failure,
    pub attempts: u32,
    pub elapsed: Duration,
    /// The failure was retryable but attempts or the deadline ran out.
    pub gave_up: bool,
}

/// Runs `op` until it succeeds, fails for good, or the budget is spent.
///
/// `counter` is the request-type counter bumped once per attempt.
/// `attempt_timeout` caps each attempt (further capped by what is left of
/// the deadline).
pub(crate) async fn retry<T, F, Fut>(
    cfg: &RetryConfig,
    attempt_timeout: Duration,
    metrics: &RequestMetrics,
    counter: &AtomicU64,
    mut op: F,
) -> std::result::Result<T, Exhausted>
where
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = std::result::Result<T, Failure>>,
{
    let start = Instant::now();
    let mut attempt: u32 = 0;
    let mut previous: Option<Failure> = None;
    loop {
        attempt += 1;
        add(counter, 1);
        let remaining = cfg.total_deadline.saturating_sub(start.elapsed());
        let cut_by_deadline = remaining < attempt_timeout;
        let limit = attempt_timeout.min(remaining).max(Duration::from_millis(1));
        let result = match tokio::time::timeout(limit, op(attempt)).await {
            Ok(r) => r,
            // The deadline cut a retry short: the earlier failure says more.
            Err(_) if cut_by_deadline && previous.is_some() => {
                return Err(Exhausted {
                    last: previous
                        .take()
                        .unwrap_or_else(|| Failure::attempt_timeout(limit)),
                    attempts: attempt,
                    elapsed: start.elapsed(),
                    gave_up: true,
                });
            }
            Err(_) => Err(Failure::attempt_timeout(limit)),
        };
        let failure = match result {
            Ok(v) => return Ok(v),
            Err(f) => f,
        };
        if !failure.kind.retryable() {
            return Err(Exhausted {
                last: failure,
                attempts: attempt,
                elapsed: start.elapsed(),
                gave_up: false,
            });
        }
        let pause = cfg.backoff(attempt - 1);
        if attempt >= cfg.max_attempts || start.elapsed() + pause >= cfg.total_deadline {
            return Err(Exhausted {
                last: failure,
                attempts: attempt,
                elapsed: start.elapsed(),
                gave_up: true,
            });
        }
        add(&metrics.retries, 1);
        if failure.kind == Kind::Throttle {
            add(&metrics.throttles, 1);
        }
        tracing::debug!(
            attempt,
            error = %failure.short(),
            backoff = ?pause,
            "retrying S3 request"
        );
        previous = Some(failure);
        tokio::time::sleep(pause).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;

    #[test]
    fn classification() {
        assert_eq!(classify(Some(503), Some("SlowDown")), Kind::Throttle);
        assert_eq!(classify(Some(503), None), Kind::Throttle);
        assert_eq!(classify(Some(500), Some("InternalError")), Kind::Transient);
        assert_eq!(classify(Some(502), None), Kind::Transient);
        assert_eq!(classify(Some(400), Some("RequestTimeout")), Kind::Transient);
        assert_eq!(classify(Some(403), Some("AccessDenied")), Kind::Fatal);
        assert_eq!(classify(Some(404), Some("NoSuchBucket")), Kind::Fatal);
        assert_eq!(classify(Some(404), Some("NoSuchKey")), Kind::NotFound);
        assert_eq!(classify(Some(404), None), Kind::NotFound);
        assert_eq!(
            classify(Some(412), Some("PreconditionFailed")),
            Kind::Precondition
        );
        assert_eq!(
            classify(Some(416), Some("InvalidRange")),
            Kind::InvalidRange
        );
    }

    fn response(status: u16, content_type: Option<&str>, body: &'static str) -> HttpResponse {
        let mut r = HttpResponse::new(
            aws_smithy_runtime_api::http::StatusCode::try_from(status).unwrap(),
            aws_sdk_s3::primitives::SdkBody::from(body),
        );
        if let Some(c) = content_type {
            r.headers_mut().insert("content-type", c.to_string());
        }
        r
    }

    #[test]
    fn web_pages_are_not_s3_answers() {
        let html = "<!DOCTYPE html><html><body>It works</body></html>";
        let xml = "<?xml version=\"1.0\"?><Error><Code>X</Code></Error>";
        let why = not_s3(&response(501, Some("text/html"), html)).unwrap();
        assert_eq!(why, "HTTP 501 with an HTML body");
        assert!(not_s3(&response(500, None, html)).is_some());
        assert!(not_s3(&response(405, Some("text/plain"), "nope")).is_some());
        assert!(not_s3(&response(200, Some("text/html"), "")).is_some());
        // S3's own answers: XML error bodies, and HEAD errors without a body.
        assert_eq!(not_s3(&response(503, Some("application/xml"), xml)), None);
        assert_eq!(not_s3(&response(500, None, xml)), None);
        assert_eq!(not_s3(&response(403, None, "")), None);
        // 501 Not Implemented will not start working on a retry.
        assert_eq!(classify(Some(501), None), Kind::Fatal);
    }

    #[test]
    fn backoff_is_capped() {
        let c = RetryConfig {
            max_attempts: 5,
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(50),
            total_deadline: Duration::from_secs(1),
        };
        for r in 0..40 {
            assert!(c.backoff(r) <= Duration::from_millis(50));
        }
        assert!(c.backoff(0) <= Duration::from_millis(10));
    }

    #[tokio::test]
    async fn retries_then_succeeds_and_counts() {
        let m = RequestMetrics::default();
        let c = RetryConfig {
            max_attempts: 5,
            initial_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(2),
            total_deadline: Duration::from_secs(10),
        };
        let out = retry(&c, Duration::from_secs(1), &m, &m.get, |n| async move {
            if n < 3 {
                let mut f = Failure::new(Kind::Throttle, "slow down");
                f.status = Some(503);
                Err(f)
            } else {
                Ok(n)
            }
        })
        .await
        .unwrap();
        assert_eq!(out, 3);
        assert_eq!(m.get.load(Ordering::Relaxed), 3);
        assert_eq!(m.retries.load(Ordering::Relaxed), 2);
        assert_eq!(m.throttles.load(Ordering::Relaxed), 2);
    }

    #[tokio::test]
    async fn fatal_is_not_retried() {
        let m = RequestMetrics::default();
        let c = RetryConfig::default();
        let e = retry(&c, Duration::from_secs(1), &m, &m.put, |_| async {
            Err::<(), _>(Failure::new(Kind::Fatal, "denied"))
        })
        .await
        .unwrap_err();
        assert_eq!(e.attempts, 1);
        assert!(!e.gave_up);
        assert_eq!(m.retries.load(Ordering::Relaxed), 0);
    }
}
