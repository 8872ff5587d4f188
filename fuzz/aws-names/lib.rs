//! The AWS backend's resource names, compiled from the backend's own file: what the settings
//! module needs from `como_backend_aws`, without the AWS SDK.

#[path = "../../backends/aws/src/names.rs"]
pub mod names;
