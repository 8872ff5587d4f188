# What an operator watches: the log groups (with retention, under the deployment's key), the
# alarms (to an encrypted topic), and one CloudWatch dashboard. The provider is configured by
# the environment root.
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
