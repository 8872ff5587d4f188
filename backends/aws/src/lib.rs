//! The AWS backend: the ports on SQS, DynamoDB, EventBridge and Secrets Manager.
//!
//! Arrives with issue 5. Must pass the same port conformance suites as the embedded backend.
