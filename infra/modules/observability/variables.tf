variable "prefix" {
  description = "The prefix of every resource name."
  type        = string
}

variable "kms_key_arn" {
  type = string
}

variable "log_retention_days" {
  description = "How long every log group keeps its logs."
  type        = number
  default     = 365
}

variable "roles" {
  description = "The roles with a log group of their own."
  type        = list(string)
  default     = ["api", "orchestrator", "worker-crm", "worker-sevenrooms", "rotate-tokens"]
}

variable "queues" {
  description = "The data module's queues by their own names (name, arn, url)."
  type        = map(object({ name = string, arn = string, url = string }))
}

variable "dead_letter_queues" {
  description = "The data module's dead-letter queues by their queue's own name."
  type        = map(object({ name = string, arn = string, url = string }))
}

variable "oldest_message_alarm_seconds" {
  description = "Alarm when a queue's oldest message is older than this (seconds), by the queue's own name; queues not named use 600."
  type        = map(number)
  default = {
    requests            = 300
    replies             = 300
    commands-crm        = 900
    commands-sevenrooms = 900
    notifications       = 900
  }
}

variable "cluster_name" {
  type = string
}

variable "cluster_arn" {
  type = string
}

variable "service_names" {
  description = "The compute module's service names by role."
  type        = map(string)
}

variable "heartbeat" {
  description = "The compute module's heartbeat metric (output heartbeat): namespace, metric name, beats per task a minute, and each service's floor (min_tasks) by its Service dimension."
  type = object({
    namespace        = string
    metric           = string
    beats_per_minute = number
    floor            = map(number)
  })
}

variable "alb_arn_suffix" {
  type = string
}

variable "target_group_arn_suffix" {
  type = string
}

variable "web_acl_name" {
  description = "The firewall's name (for the dashboard)."
  type        = string
}

variable "api_5xx_percent" {
  description = "Alarm when more than this share of the API's requests (percent, over 5 minutes) end in a 5xx from the API or the load balancer."
  type        = number
  default     = 5
}

variable "alarm_emails" {
  description = "Addresses subscribed to the alarm topic (each confirms by mail)."
  type        = list(string)
  default     = []
}
