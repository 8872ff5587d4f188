# What a production deployment chooses. terraform.tfvars.example shows a complete set; the
# required ones have no default.

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

# --- network

variable "vpc_cidr" {
  description = "The VPC's address range."
  type        = string
  default     = "10.40.0.0/16"
}

variable "availability_zones" {
  description = "The availability zones to span, by name: at least two (active-active), in var.region."
  type        = list(string)
  default     = ["ap-southeast-1a", "ap-southeast-1b"]
}

variable "nat_gateways" {
  description = "\"one\" NAT gateway, or \"per-zone\" (docs/DEPLOY.md weighs them)."
  type        = string
  default     = "one"
}

variable "interface_endpoints" {
  description = "AWS services reached through interface endpoints instead of the NAT gateway (none by default; docs/DEPLOY.md)."
  type        = list(string)
  default     = []
}

# --- edge

variable "api_domain_name" {
  description = "The operator API's and dashboard's host name, e.g. ops.example.com."
  type        = string
}

variable "certificate_arn" {
  description = "The ACM certificate for api_domain_name, in var.region."
  type        = string
}

variable "route53_zone_id" {
  description = "A Route 53 hosted zone to add api_domain_name to; empty: point your DNS at the output alb_dns_name."
  type        = string
  default     = ""
}

variable "cognito_domain_prefix" {
  description = "The prefix of the Cognito hosted UI's domain (<prefix>.auth.<region>.amazoncognito.com); unique in the region."
  type        = string
}

variable "user_pool_tier" {
  description = "The Cognito user pool's feature plan: LITE, ESSENTIALS or PLUS (threat protection). docs/DEPLOY.md weighs them."
  type        = string
  default     = "LITE"
}

variable "waf_rate_limit" {
  description = "Requests one client address may make in 5 minutes before the firewall blocks it."
  type        = number
  default     = 2000
}

variable "deletion_protection" {
  description = "Protect the load balancer and the user pool against deletion."
  type        = bool
  default     = true
}

# --- compute

variable "image" {
  description = "The como-saga image to start with, e.g. <account>.dkr.ecr.<region>.amazonaws.com/como-saga:<commit> (CI rolls newer ones)."
  type        = string
}

variable "cpu_architecture" {
  description = "ARM64 (Graviton) or X86_64: what the image is built for."
  type        = string
  default     = "ARM64"
}

variable "task_size" {
  description = "Fargate CPU units and memory (MiB) per task of each role."
  type        = map(object({ cpu = number, memory = number }))
  default = {
    api               = { cpu = 256, memory = 512 }
    orchestrator      = { cpu = 256, memory = 512 }
    worker-crm        = { cpu = 256, memory = 512 }
    worker-sevenrooms = { cpu = 256, memory = 512 }
    rotate-tokens     = { cpu = 256, memory = 512 }
  }
}

variable "min_tasks" {
  description = "Tasks per service at the least: two or more (one per zone)."
  type        = map(number)
  default = {
    api               = 2
    orchestrator      = 2
    worker-crm        = 2
    worker-sevenrooms = 2
  }
}

variable "max_tasks" {
  description = "Tasks per service at the most."
  type        = map(number)
  default = {
    api               = 4
    orchestrator      = 6
    worker-crm        = 6
    worker-sevenrooms = 6
  }
}

variable "spot_above_floor" {
  description = "Run the orchestrator's and the workers' tasks above min_tasks on Fargate Spot (the floor stays on demand; docs/DEPLOY.md)."
  type        = bool
  default     = true
}

variable "backlog_per_task" {
  description = "Visible messages per running task the queue-driven services scale to."
  type        = number
  default     = 100
}

variable "peak" {
  description = "A known peak during which the orchestrator and the workers keep at least min_tasks tasks (cron in the time zone given; empty start: none)."
  type = object({
    start     = string
    end       = string
    timezone  = string
    min_tasks = number
  })
  default = {
    start     = "cron(30 17 ? * FRI,SAT *)"
    end       = "cron(30 21 ? * FRI,SAT *)"
    timezone  = "Asia/Singapore"
    min_tasks = 3
  }
}

variable "memberson_url" {
  description = "Memberson's base URL (https)."
  type        = string
}

variable "sevenrooms_url" {
  description = "SevenRooms' base URL (https)."
  type        = string
}

variable "venues" {
  description = "The venues bookable with Como Credits and their price per guest, e.g. { \"como-dempsey-candlenut\" = { credits_per_guest = 600 } }. The orchestrator refuses to start without it."
  type        = map(object({ credits_per_guest = number }))

  validation {
    condition     = length(var.venues) > 0 && alltrue([for v in values(var.venues) : v.credits_per_guest > 0])
    error_message = "Give at least one venue, each with a positive credits_per_guest."
  }
}

variable "deadline" {
  description = "COMO_SAGA_DEADLINE for every process."
  type        = string
  default     = "15m"
}

variable "dashboard_refresh" {
  description = "COMO_SAGA_DASHBOARD_REFRESH: how often an API task reads the dashboard's overview while a dashboard is open on it (none while none is; docs/DEPLOY.md prices it)."
  type        = string
  default     = "5m"
}

variable "rotation_schedule" {
  description = "When `como-saga rotate-tokens` rotates the Memberson service token."
  type        = string
  default     = "rate(12 hours)"
}

variable "rotation_test_member" {
  description = "A Memberson member number whose summary each new token reads as its test."
  type        = string
}

variable "github_owner" {
  description = "The owner of the GitHub repository whose deploy workflow may deploy (the deploy role)."
  type        = string
}

variable "github_repository" {
  description = "That repository's name, without the owner."
  type        = string
}

variable "create_github_oidc_provider" {
  description = "Create the account's GitHub OIDC identity provider (false if it exists)."
  type        = bool
  default     = true
}

# --- observability

variable "log_retention_days" {
  description = "How long every log group keeps its logs."
  type        = number
  default     = 365
}

variable "alarm_emails" {
  description = "Addresses that receive the alarms."
  type        = list(string)
  default     = []
}
