# The edge of a deployment: the one public entry (an Application Load Balancer, HTTPS only),
# the web application firewall on it, and the Cognito user pool whose tokens the operator API
# accepts. The provider is configured by the environment root.
terraform {
  required_version = ">= 1.10"
  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 5.83"
    }
  }
}

data "aws_region" "current" {}
