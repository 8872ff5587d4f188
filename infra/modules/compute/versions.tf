# The compute of a deployment: the image repository, one ECS Fargate service per role (the
# operator API, the orchestrator, each worker) on the one como-saga image, their IAM roles
# (least privilege), their autoscaling, the scheduled token rotation, and the role CI deploys
# with. The provider is configured by the environment root.
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
