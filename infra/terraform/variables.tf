variable "prefix" {
  description = "The prefix of every resource name (COMO_SAGA_AWS_PREFIX); the backend's default is como-saga."
  type        = string
  default     = "como-saga"
}

variable "region" {
  description = "The AWS region."
  type        = string
  default     = "ap-southeast-1"
}

variable "max_receives" {
  description = "Receives of a message before SQS moves it to its dead-letter queue (the backend's AwsConfig::max_receives)."
  type        = number
  default     = 10
}

variable "image" {
  description = "The como-saga container image (one binary, every role)."
  type        = string
}

variable "vpc_id" {
  description = "The VPC the services run in."
  type        = string
}

variable "subnet_ids" {
  description = "Private subnets with a route to the internet (NAT) or VPC endpoints for SQS, DynamoDB, EventBridge and Secrets Manager."
  type        = list(string)
}

variable "memberson_url" {
  description = "Memberson's base URL."
  type        = string
}

variable "sevenrooms_url" {
  description = "SevenRooms' base URL."
  type        = string
}

variable "desired_count" {
  description = "Tasks per role."
  type        = map(number)
  default = {
    orchestrator      = 2
    worker-crm        = 2
    worker-sevenrooms = 2
  }
}

variable "log_retention_days" {
  description = "How long the services' logs are kept."
  type        = number
  default     = 365
}

variable "rotation_schedule" {
  description = "When `como-saga rotate-tokens` rotates the Memberson service token."
  type        = string
  default     = "rate(12 hours)"
}

variable "venues" {
  description = "The venues bookable with Como Credits and their price per guest, e.g. { \"como-dempsey-candlenut\" = { credits_per_guest = 600 } }. The orchestrator refuses to start without it."
  type        = map(object({ credits_per_guest = number }))

  validation {
    condition     = length(var.venues) > 0 && alltrue([for v in values(var.venues) : v.credits_per_guest > 0])
    error_message = "Give at least one venue, each with a positive credits_per_guest."
  }
}

variable "dashboard_url" {
  description = "Where operators open the dashboard (the API's address and /dashboard/, https), e.g. https://ops.example.com/dashboard/: Cognito's hosted UI sends the signed-in user back there with the token."
  type        = string

  validation {
    condition     = can(regex("^https://[^/]+/.*dashboard/$", var.dashboard_url))
    error_message = "The dashboard's https URL, ending in /dashboard/."
  }
}

variable "cognito_domain_prefix" {
  description = "The prefix of the Cognito hosted UI's domain (<prefix>.auth.<region>.amazoncognito.com); unique in the region."
  type        = string
}
