# The data of a deployment: the queues with their dead-letter queues, the saga table, the event
# bus with the booking rule, the secrets, and the one customer-managed key that encrypts them
# and the logs. Names come from names.tf only. The provider is configured by the environment
# root (infra/envs/*).
terraform {
  required_version = ">= 1.10"
  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 5.83"
    }
  }
}

data "aws_caller_identity" "current" {}
data "aws_region" "current" {}
data "aws_partition" "current" {}
