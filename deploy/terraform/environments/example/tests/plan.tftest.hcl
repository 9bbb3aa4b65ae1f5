# The whole environment planned and "applied" against a mocked AWS provider (terraform test,
# Terraform >= 1.7): every expression, for_each, template, precondition and output is
# evaluated with concrete values, with no credentials, no network and nothing created.
# Run by scripts/check-terraform.sh.

mock_provider "aws" {
  mock_data "aws_region" {
    defaults = { name = "eu-central-1" }
  }

  mock_data "aws_caller_identity" {
    defaults = { account_id = "123456789012" }
  }

  mock_data "aws_partition" {
    defaults = { partition = "aws" }
  }

  mock_data "aws_availability_zones" {
    defaults = { names = ["eu-central-1a", "eu-central-1b"] }
  }

  mock_data "aws_iam_policy_document" {
    defaults = { json = "{\"Version\":\"2012-10-17\",\"Statement\":[]}" }
  }

  mock_data "aws_elb_service_account" {
    defaults = { arn = "arn:aws:iam::054676820928:root" }
  }

  mock_data "aws_ami" {
    defaults = { id = "ami-0123456789abcdef0" }
  }

  # Attributes the provider validates as ARNs or URLs when they feed other resources.
  mock_resource "aws_kms_key" {
    defaults = { arn = "arn:aws:kms:eu-central-1:123456789012:key/00000000-0000-0000-0000-000000000000" }
  }

  mock_resource "aws_s3_bucket" {
    defaults = { arn = "arn:aws:s3:::slipway-example-mock" }
  }

  mock_resource "aws_lb" {
    defaults = { arn = "arn:aws:elasticloadbalancing:eu-central-1:123456789012:loadbalancer/app/slipway-example/0123456789abcdef" }
  }

  mock_resource "aws_lb_target_group" {
    defaults = { arn = "arn:aws:elasticloadbalancing:eu-central-1:123456789012:targetgroup/api-mock/0123456789abcdef" }
  }

  mock_resource "aws_iam_role" {
    defaults = { arn = "arn:aws:iam::123456789012:role/slipway-example-mock" }
  }

  mock_resource "aws_iam_instance_profile" {
    defaults = { arn = "arn:aws:iam::123456789012:instance-profile/slipway-example-mock" }
  }

  mock_resource "aws_ecr_repository" {
    defaults = {
      arn            = "arn:aws:ecr:eu-central-1:123456789012:repository/slipway-example/functions"
      repository_url = "123456789012.dkr.ecr.eu-central-1.amazonaws.com/slipway-example/functions"
    }
  }

  mock_resource "aws_cloudwatch_log_group" {
    defaults = { arn = "arn:aws:logs:eu-central-1:123456789012:log-group:/slipway/example/services" }
  }

  mock_resource "aws_secretsmanager_secret" {
    defaults = { arn = "arn:aws:secretsmanager:eu-central-1:123456789012:secret:slipway-example/secrets-key-AbCdEf" }
  }

  mock_resource "aws_launch_template" {
    defaults = { id = "lt-0123456789abcdef0", latest_version = 1 }
  }

  mock_resource "aws_db_instance" {
    defaults = {
      master_user_secret = [{ secret_arn = "arn:aws:secretsmanager:eu-central-1:123456789012:secret:rds!db-mock", secret_status = "active", kms_key_id = "mock" }]
    }
  }
}

variables {
  certificate_arn = "arn:aws:acm:eu-central-1:123456789012:certificate/00000000-0000-0000-0000-000000000000"
  api_domain      = "slipway.example.com"
}

run "plan" {
  command = plan

  assert {
    condition     = output.api_url == "https://slipway.example.com"
    error_message = "api_url should use api_domain."
  }

  assert {
    condition     = length(module.network.private_subnet_ids) == 2
    error_message = "There should be one private subnet per zone."
  }
}

run "mocked_apply" {
  command = apply

  assert {
    condition     = toset(keys(module.cluster.launch_template_ids)) == toset(["manager", "worker"])
    error_message = "There should be a manager and a worker launch template."
  }

  assert {
    condition     = toset(keys(output.secret_arns)) == toset(["database", "secrets-key"])
    error_message = "secret_arns should name the database and the secrets-key secrets."
  }

  assert {
    condition     = output.ssm_parameter_names["manager_join_token"] == "/slipway/example/swarm/manager-token"
    error_message = "The manager token parameter should live under /slipway/<environment>/swarm."
  }

  assert {
    condition     = startswith(output.stack_environment["SLIPWAY_ARCHIVE_STORE"], "s3://slipway-example-archives-")
    error_message = "SLIPWAY_ARCHIVE_STORE should name the archive bucket."
  }

  assert {
    condition     = startswith(output.ssm_parameter_names["bootstrap_claim"], "/slipway/example/swarm/bootstrap-")
    error_message = "The bootstrap claim should carry the cluster generation."
  }
}
