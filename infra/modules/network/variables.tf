variable "prefix" {
  description = "The prefix of every resource name."
  type        = string
}

variable "cidr_block" {
  description = "The VPC's address range; each zone gets a /24 public and a /24 private subnet of it."
  type        = string
  default     = "10.40.0.0/16"
}

variable "availability_zones" {
  description = "The availability zones the deployment spans, by name: at least two, so that every service runs active-active."
  type        = list(string)

  validation {
    condition     = length(var.availability_zones) >= 2
    error_message = "At least two availability zones: the deployment promises active-active service across zones."
  }
}

variable "nat_gateways" {
  description = "\"one\": one NAT gateway, in the first zone, for every private subnet (cheaper; outbound calls to Memberson and SevenRooms stop if that zone fails). \"per-zone\": one in each zone (each zone's tasks reach the internet through their own zone). docs/DEPLOY.md weighs the two."
  type        = string
  default     = "one"

  validation {
    condition     = contains(["one", "per-zone"], var.nat_gateways)
    error_message = "nat_gateways is \"one\" or \"per-zone\"."
  }
}

variable "interface_endpoints" {
  description = "AWS services reached through interface endpoints in the private subnets instead of the NAT gateway, e.g. [\"sqs\", \"secretsmanager\", \"events\", \"logs\", \"ecr.api\", \"ecr.dkr\"]. Each costs an endpoint-hour per zone; docs/DEPLOY.md says when one pays for itself."
  type        = list(string)
  default     = []
}

variable "kms_key_arn" {
  description = "The deployment's key, for the flow log group."
  type        = string
}

variable "log_retention_days" {
  description = "How long the flow logs are kept."
  type        = number
}
