//! Building the SDK client from an [`S3Config`].

use aws_sdk_s3::config::retry::RetryConfig as SdkRetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{
    BehaviorVersion, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::Client;
use shuffle_core::Result;

use super::credentials::load_chain;
use crate::config::{Credentials, S3Config};

/// Builds the SDK client: SDK retries off (ours count), connect timeout set,
/// checksums only where S3 requires them (many S3-compatible stores reject
/// the SDK's default trailing checksums; shuffle data carries its own crc32).
/// With the AWS chain, credentials are resolved here (see [`load_chain`]).
pub(super) async fn build_client(config: &S3Config) -> Result<Client> {
    let mut builder = match &config.credentials {
        Credentials::Chain => {
            let sdk = load_chain(config, &config.endpoint_description()).await?;
            let region = sdk.region().cloned();
            let mut b = aws_sdk_s3::config::Builder::from(&sdk);
            if region.is_none() {
                b = b.region(Region::new("us-east-1"));
            }
            b
        }
        Credentials::Static {
            access_key_id,
            secret_access_key,
            session_token,
        } => aws_sdk_s3::config::Builder::new()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(
                config.region.clone().unwrap_or_else(|| "us-east-1".into()),
            ))
            .credentials_provider(aws_sdk_s3::config::Credentials::new(
                access_key_id.clone(),
                secret_access_key.expose().to_string(),
                session_token.as_ref().map(|t| t.expose().to_string()),
                None,
                "shovel-static",
            )),
    };
    builder = builder
        .retry_config(SdkRetryConfig::disabled())
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(config.connect_timeout)
                .build(),
        )
        .force_path_style(config.force_path_style)
        .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
        .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
    if let Some(e) = &config.endpoint {
        builder = builder.endpoint_url(e.clone());
    }
    Ok(Client::from_conf(builder.build()))
}
