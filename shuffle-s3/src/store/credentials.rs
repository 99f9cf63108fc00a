//! The AWS credential chain, resolved once at [`S3Store::new`](super::S3Store::new)
//! within `s3.credentials_timeout`, so that missing credentials fail there
//! with the fixes instead of at the first request.

use aws_sdk_s3::config::{BehaviorVersion, ProvideCredentials, Region};
use shuffle_core::{Error, Result};

use crate::config::S3Config;

/// The fixes for missing credentials, for messages.
const CREDENTIAL_FIXES: &str = "Set s3.access_key_id and s3.secret_access_key (or \
     AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY), pick a profile with AWS_PROFILE, or run with \
     an instance or task role";

/// Loads the AWS chain's config and resolves its credentials once, within
/// `config.credentials_timeout` in all, so that missing credentials fail
/// here with the fixes instead of at the first request, after the chain's
/// instance-metadata lookup and the retry deadline. Only the outcome is
/// used (the client resolves and refreshes credentials itself); nothing
/// about the credentials is logged.
pub(super) async fn load_chain(config: &S3Config, endpoint: &str) -> Result<aws_config::SdkConfig> {
    let limit = config.credentials_timeout;
    let started = tokio::time::Instant::now();
    let mut loader = aws_config::defaults(BehaviorVersion::latest());
    if let Some(r) = &config.region {
        loader = loader.region(Region::new(r.clone()));
    }
    let backend = |message: String| Error::Backend {
        store: "s3",
        message,
        source: None,
    };
    let sdk = tokio::time::timeout(limit, loader.load())
        .await
        .map_err(|_| {
            backend(format!(
                "the AWS config chain did not answer within {limit:?} (s3.credentials_timeout) \
                 for {endpoint}: without s3.region the region lookup waits on instance \
                 metadata. Set s3.region (or AWS_REGION)"
            ))
        })?;
    let Some(provider) = sdk.credentials_provider() else {
        return Err(backend(format!(
            "no AWS credentials to sign requests to {endpoint}: the AWS credential chain is \
             disabled. {CREDENTIAL_FIXES}"
        )));
    };
    let left = limit.saturating_sub(started.elapsed());
    match tokio::time::timeout(left, provider.provide_credentials()).await {
        Ok(Ok(_)) => Ok(sdk),
        Ok(Err(e)) => Err(Error::Backend {
            store: "s3",
            message: format!(
                "no AWS credentials to sign requests to {endpoint}: the AWS credential chain \
                 found none ({}). {CREDENTIAL_FIXES}",
                credentials_error(&e)
            ),
            source: Some(Box::new(e)),
        }),
        Err(_) => Err(backend(format!(
            "no AWS credentials to sign requests to {endpoint} within {limit:?} \
             (s3.credentials_timeout): the AWS credential chain did not answer. \
             {CREDENTIAL_FIXES}; or raise s3.credentials_timeout if the role's provider is slow"
        ))),
    }
}

/// What the chain said, on one line: the innermost useful text (the chain
/// lists each provider it tried and why it gave nothing), without the
/// error's `Debug` form.
fn credentials_error(e: &(dyn std::error::Error + 'static)) -> String {
    let inner = e.source().unwrap_or(e);
    let mut text = inner.to_string();
    let mut next = inner.source();
    while let Some(s) = next {
        text.push_str(": ");
        text.push_str(&s.to_string());
        next = s.source();
    }
    // Each provider the chain skipped says "the credential provider was not
    // enabled" before its reason; the reason is what helps.
    let text = text
        .replace("the credential provider was not enabled: ", "")
        .replace("the credential provider was not enabled", "not configured");
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    let first = lines.next().unwrap_or("").to_string();
    let rest: Vec<&str> = lines.collect();
    if rest.is_empty() {
        first
    } else {
        format!("{first} {}", rest.join("; "))
    }
}
