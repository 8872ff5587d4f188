# The production environment of como-saga: the provider, the state, and the modules wired
# together (main.tf). docs/DEPLOY.md takes it from nothing to a running deployment.
terraform {
  required_version = ">= 1.10"
  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 5.83"
    }
  }

  # State in S3, locked by a lock file beside it (Terraform 1.10+; no lock table). The bucket
  # and its region are given at `terraform init` (partial configuration, docs/DEPLOY.md):
  #   terraform init -backend-config=bucket=<state bucket> -backend-config=region=<region>
  backend "s3" {
    key          = "como-saga/prod/terraform.tfstate"
    encrypt      = true
    use_lockfile = true
  }
}

provider "aws" {
  region = var.region
  default_tags {
    tags = {
      application = "como-saga"
      deployment  = var.prefix
      environment = "prod"
    }
  }
}
