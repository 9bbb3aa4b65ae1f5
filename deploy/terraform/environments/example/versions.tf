terraform {
  required_version = ">= 1.6.0, < 2.0.0"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 5.70"
    }
  }

  # Keep the state in S3 for anything longer-lived than an experiment, e.g.
  #   terraform init -backend-config="bucket=<state bucket>" -backend-config="key=slipway/example.tfstate" \
  #     -backend-config="region=<region>" -backend-config="use_lockfile=true"
  # after uncommenting:
  # backend "s3" {}
}

provider "aws" {
  region = var.region

  # Every resource that supports tags gets these; what an ASG launches gets them through
  # the cluster module's tags variable (default_tags do not reach it).
  default_tags {
    tags = local.tags
  }
}
