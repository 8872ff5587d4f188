variable "prefix" {
  description = "The prefix of every resource name."
  type        = string
}

variable "vpc_id" {
  type = string
}

variable "vpc_cidr_block" {
  description = "The VPC's range: the load balancer forwards into it only."
  type        = string
}

variable "public_subnet_ids" {
  description = "The load balancer's subnets, one per zone."
  type        = list(string)

  validation {
    condition     = length(var.public_subnet_ids) >= 2
    error_message = "The load balancer spans at least two zones."
  }
}

variable "api_port" {
  description = "The port the API's tasks serve on (COMO_SAGA_API_LISTEN)."
  type        = number
  default     = 8080
}

variable "api_domain_name" {
  description = "The operator API's and dashboard's host name, e.g. ops.example.com (the certificate's name)."
  type        = string
}

variable "certificate_arn" {
  description = "The ACM certificate for api_domain_name, in the deployment's region."
  type        = string
}

variable "route53_zone_id" {
  description = "A Route 53 hosted zone to add api_domain_name to (an alias of the load balancer); empty: point your DNS at the output alb_dns_name yourself."
  type        = string
  default     = ""
}

variable "cognito_domain_prefix" {
  description = "The prefix of the Cognito hosted UI's domain (<prefix>.auth.<region>.amazoncognito.com); unique in the region."
  type        = string
}

variable "user_pool_tier" {
  description = "The user pool's feature plan: LITE ($0.0055 a monthly active user), ESSENTIALS ($0.015) or PLUS ($0.02, with threat protection: compromised-credential checks and adaptive authentication, enforced). docs/DEPLOY.md weighs them."
  type        = string
  default     = "LITE"

  validation {
    condition     = contains(["LITE", "ESSENTIALS", "PLUS"], var.user_pool_tier)
    error_message = "user_pool_tier is LITE, ESSENTIALS or PLUS."
  }
}

variable "waf_rate_limit" {
  description = "Requests one client address may make in any 5 minutes before the firewall blocks it for a while."
  type        = number
  default     = 2000
}

variable "waf_log_group_arn" {
  description = "The log group (its name begins with aws-waf-logs-) that receives the firewall's log."
  type        = string
}

variable "deletion_protection" {
  description = "Protect the load balancer and the user pool against deletion (turn off to destroy the deployment)."
  type        = bool
  default     = true
}
