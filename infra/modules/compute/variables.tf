variable "prefix" {
  description = "The prefix of every resource name (COMO_SAGA_AWS_PREFIX)."
  type        = string
}

variable "image" {
  description = "The como-saga image the task definitions start with (CI registers newer revisions; docs/DEPLOY.md)."
  type        = string
}

variable "cpu_architecture" {
  description = "The tasks' processor: ARM64 (Graviton, about a fifth cheaper on Fargate) or X86_64; the image must be built for it."
  type        = string
  default     = "ARM64"

  validation {
    condition     = contains(["ARM64", "X86_64"], var.cpu_architecture)
    error_message = "cpu_architecture is ARM64 or X86_64."
  }
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
  description = "Tasks per service at the least (and at the start): two or more, so that each service runs in both zones."
  type        = map(number)
  default = {
    api               = 2
    orchestrator      = 2
    worker-crm        = 2
    worker-sevenrooms = 2
  }

  validation {
    condition     = alltrue([for n in values(var.min_tasks) : n >= 2])
    error_message = "Every service runs at least two tasks (one per zone): active-active."
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
  description = "Run the orchestrator's and the workers' tasks above min_tasks (scale-out, the scheduled peak) on Fargate Spot; the floor stays on demand. A Spot interruption is SIGTERM with two minutes' notice: the task finishes its batch and what it had not deleted returns to its queue (docs/DEPLOY.md)."
  type        = bool
  default     = true
}

variable "backlog_per_task" {
  description = "The target of the queue-driven services' scaling: visible messages per running task."
  type        = number
  default     = 100
}

variable "api_requests_per_task" {
  description = "The target of the API's scaling: requests per task per minute through the load balancer."
  type        = number
  default     = 600
}

variable "peak" {
  description = "A known peak (e.g. dinner bookings on Friday and Saturday): during it the orchestrator and the workers keep at least min_tasks of it. Cron expressions in the time zone given; empty start: no scheduled peak."
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

variable "vpc_id" {
  type = string
}

variable "private_subnet_ids" {
  description = "The tasks' subnets, one per zone."
  type        = list(string)

  validation {
    condition     = length(var.private_subnet_ids) >= 2
    error_message = "The services span at least two zones: give a private subnet in each."
  }
}

variable "alb_security_group_id" {
  description = "The load balancer's security group: the only source the API's tasks accept."
  type        = string
}

variable "target_group_arn" {
  description = "The load balancer's target group for the API."
  type        = string
}

variable "alb_arn_suffix" {
  type = string
}

variable "target_group_arn_suffix" {
  type = string
}

variable "kms_key_arn" {
  type = string
}

variable "queues" {
  description = "The data module's queues by their own names (name, arn, url)."
  type        = map(object({ name = string, arn = string, url = string }))
}

variable "dead_letter_queues" {
  description = "The data module's dead-letter queues by their queue's own name."
  type        = map(object({ name = string, arn = string, url = string }))
}

variable "table_arn" {
  type = string
}

variable "bus_arn" {
  type = string
}

variable "secret_arns" {
  description = "The data module's secrets by their own names (memberson-token, memberson-credentials, sevenrooms-credentials, data-keys)."
  type        = map(string)
}

variable "log_groups" {
  description = "The observability module's log group per role (api, orchestrator, worker-crm, worker-sevenrooms, rotate-tokens): name and ARN."
  type        = map(object({ name = string, arn = string }))
}

variable "memberson_url" {
  description = "Memberson's base URL (https)."
  type        = string

  validation {
    condition     = startswith(var.memberson_url, "https://")
    error_message = "Memberson is called over TLS: an https:// URL."
  }
}

variable "sevenrooms_url" {
  description = "SevenRooms' base URL (https)."
  type        = string

  validation {
    condition     = startswith(var.sevenrooms_url, "https://")
    error_message = "SevenRooms is called over TLS: an https:// URL."
  }
}

variable "venues" {
  description = "The venues bookable with Como Credits and their price per guest (COMO_SAGA_VENUES)."
  type        = map(object({ credits_per_guest = number }))
}

variable "deadline" {
  description = "COMO_SAGA_DEADLINE, the same for every process: how long a booking may take to move forward before it compensates."
  type        = string
  default     = "15m"
}

variable "api_auth" {
  description = "The edge module's user pool, as the API checks tokens: JWKS URL, issuer, audience, and the hosted UI's sign-in URL for the dashboard."
  type = object({
    jwks_url   = string
    issuer     = string
    audience   = string
    signin_url = string
  })
}

variable "dashboard_refresh" {
  description = "COMO_SAGA_DASHBOARD_REFRESH: how often an API task reads the dashboard's overview while a dashboard is open on it; while none is, it reads none (COMO_SAGA_DASHBOARD_IDLE_REFRESH=off). Each read counts every saga in the table: docs/DEPLOY.md prices it by the hours watched."
  type        = string
  default     = "5m"
}

variable "rotation_schedule" {
  description = "When `como-saga rotate-tokens` rotates the Memberson service token (EventBridge Scheduler expression)."
  type        = string
  default     = "rate(12 hours)"
}

variable "rotation_test_member" {
  description = "The Memberson member number whose summary a new token reads as its test (`rotate-tokens --test-member`)."
  type        = string
}

variable "github_owner" {
  description = "The GitHub organisation or user that owns the repository whose workflow deploys (.github/workflows/deploy.yml)."
  type        = string
}

variable "github_repository" {
  description = "That repository's name (without the owner)."
  type        = string
}

variable "github_branch" {
  description = "The branch whose pushes may deploy."
  type        = string
  default     = "main"
}

variable "create_github_oidc_provider" {
  description = "Create the account's GitHub OIDC identity provider (false if the account has one already)."
  type        = bool
  default     = true
}
