//! Error diagnosis: a failed request (after its retries) becomes one
//! [`Error`] that names the object, the endpoint and the likely fix.

use shuffle_core::Error;

use super::{Inner, Op};
use crate::retry::{Exhausted, Kind};

impl Inner {
    /// Maps a failed request to the public error, naming the object and the fix.
    pub(super) fn error(&self, op: Op, bucket: &str, key: &str, mut e: Exhausted) -> Error {
        let object = format!("s3://{bucket}/{key}");
        // S3 answers a GET of a missing key with a `NoSuchKey` body; only
        // HEAD has a bare 404 (the SDK calls it `NotFound`). A bare 404 on
        // anything else comes from something that is not S3 and must not
        // read as a lost object.
        let bare_404 = e.last.kind == Kind::NotFound && e.last.code.as_deref() != Some("NoSuchKey");
        if e.last.kind == Kind::NotFound && (op == Op::Head || !bare_404) {
            return Error::NotFound { object };
        }
        let what = format!("{} {object}", op.name());
        let endpoint = &self.endpoint;
        let f = &e.last;
        let short = f.short();
        let detail = &f.detail;
        let tries = if e.attempts > 1 {
            format!(" after {} attempts in {:.1?}", e.attempts, e.elapsed)
        } else {
            String::new()
        };
        let code = f.code.as_deref().unwrap_or("");
        let message = if f.kind == Kind::NotS3 {
            format!(
                "{endpoint} does not answer like S3 ({detail}, for {what}): check s3.endpoint \
                 (--s3-endpoint); it must be the URL of an S3 API, not of a web page or console"
            )
        } else if bare_404 {
            format!(
                "{what}: {endpoint} answered HTTP 404 without an S3 error body; is s3.endpoint \
                 an S3 service, and is s3.path_style right for it?"
            )
        } else if e.gave_up {
            if f.no_response {
                format!(
                    "no response from S3 endpoint {endpoint} for {what}{tries}: {detail}. Check \
                     s3.endpoint and s3.region, network access, and that the store is running \
                     (s3.retry.total_deadline={:?} bounds the wait)",
                    self.config.retry.total_deadline
                )
            } else if f.kind == Kind::Throttle {
                format!(
                    "{what} was throttled by {endpoint} ({short}){tries}. Spread the load over \
                     more s3.hash_prefixes or buckets, lower the concurrency, or raise \
                     s3.retry.total_deadline / s3.retry.max_attempts"
                )
            } else {
                format!(
                    "{what} kept failing at {endpoint} ({short}){tries}: {detail}. The store is \
                     unhealthy; retry later or raise s3.retry.max_attempts / s3.retry.total_deadline"
                )
            }
        } else if code == "NoSuchBucket" {
            format!(
                "bucket `{bucket}` does not exist at {endpoint} ({what}): create it or fix s3.bucket"
            )
        } else if matches!(
            code,
            "AccessDenied" | "AllAccessDisabled" | "AccountProblem"
        ) || (code.is_empty() && f.status == Some(403))
        {
            let owner = if self.config.expected_bucket_owner.is_some() {
                " (and that s3.expected_bucket_owner is the bucket's account)"
            } else {
                ""
            };
            format!(
                "{what} was denied by {endpoint} ({short}): check the credentials \
                 (s3.access_key_id / s3.secret_access_key or the AWS credential chain) and that \
                 the bucket policy or IAM role allows {} on bucket `{bucket}`{owner}",
                op.action()
            )
        } else if matches!(
            code,
            "InvalidAccessKeyId"
                | "NotSignedUp"
                | "SignatureDoesNotMatch"
                | "ExpiredToken"
                | "InvalidToken"
                | "TokenRefreshRequired"
                | "InvalidClientTokenId"
        ) {
            format!(
                "credentials were rejected by {endpoint} ({short}) for {what}: fix \
                 s3.access_key_id / s3.secret_access_key / s3.session_token, or refresh the \
                 credentials of the AWS chain"
            )
        } else if matches!(
            code,
            "PermanentRedirect"
                | "AuthorizationHeaderMalformed"
                | "IllegalLocationConstraintException"
        ) || f.status == Some(301)
        {
            format!(
                "bucket `{bucket}` is not served by {endpoint} in region {} ({short}, {what}): set \
                 s3.region to the bucket's region or fix s3.endpoint",
                self.config.region.as_deref().unwrap_or("from the AWS chain")
            )
        } else if code.starts_with("KMS") || code.contains("Encryption") {
            format!(
                "{what} was rejected by {endpoint} ({short}): {detail}. Check s3.sse / \
                 s3.sse_kms_key_id and the KMS key policy"
            )
        } else if matches!(
            code,
            "EntityTooLarge" | "EntityTooSmall" | "InvalidPart" | "InvalidPartOrder"
        ) {
            format!(
                "{what} was rejected by {endpoint} ({short}): {detail}. Check s3.part_size \
                 (5MiB..5GiB) and s3.multipart_threshold"
            )
        } else if f.kind == Kind::NoSuchUpload {
            format!(
                "the multipart upload of {object} vanished at {endpoint} ({short}): it was \
                 aborted or removed by a lifecycle rule; re-run the write"
            )
        } else if detail.to_ascii_lowercase().contains("credentials") {
            format!(
                "{what} could not be signed: no usable credentials ({detail}). Set \
                 s3.access_key_id / s3.secret_access_key, or configure the AWS chain \
                 (AWS_ACCESS_KEY_ID, a profile, or an instance/pod role)"
            )
        } else if f.no_response {
            format!(
                "{what} could not be sent to S3 endpoint {endpoint}: {detail}. Check s3.endpoint"
            )
        } else {
            format!("{what} failed at {endpoint} ({short}): {detail}")
        };
        Error::Backend {
            store: "s3",
            message,
            source: e.last.source.take(),
        }
    }
}
