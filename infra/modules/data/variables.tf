variable "prefix" {
  description = "The prefix of every resource name (COMO_SAGA_AWS_PREFIX); the backend's default is como-saga."
  type        = string
  default     = "como-saga"
}

variable "max_receives" {
  description = "Receives of a message before SQS moves it to its dead-letter queue (the backend's AwsConfig::max_receives)."
  type        = number
  default     = 10
}

variable "log_group_patterns" {
  description = "Log group names (wildcards allowed) whose logs the key encrypts: CloudWatch Logs may use the key for these only."
  type        = list(string)
}
