# The network of a deployment: a VPC over two (or more) availability zones, public subnets for
# the load balancer and the NAT gateway only, private subnets for every task, and the ways out
# of them (main.tf says which and why). The provider is configured by the environment root.
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
data "aws_partition" "current" {}
