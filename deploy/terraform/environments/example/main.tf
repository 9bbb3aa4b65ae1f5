# Slipway on AWS, one environment: a VPC, RDS PostgreSQL 15, the archive bucket, ECR, an
# ALB, and a Docker Swarm of managers and workers on EC2. Slipway's api, worker(s) and
# scheduler run on the swarm as services (deploy/swarm/stack.yml); this configuration
# outputs what that stack needs.

data "aws_caller_identity" "current" {}
data "aws_region" "current" {}

locals {
  name       = "slipway-${var.environment}"
  account_id = data.aws_caller_identity.current.account_id
  region     = data.aws_region.current.name

  tags = merge(var.tags, {
    Project     = "slipway"
    Environment = var.environment
    ManagedBy   = "terraform"
  })

  # The port slipway-api listens on (SLIPWAY_BIND=0.0.0.0:8080 on the nodes running it).
  api_port = 8080

  parameter_prefix         = "/slipway/${var.environment}/swarm"
  services_log_group_name  = "/slipway/${var.environment}/services"
  archive_bucket_name      = "${local.name}-archives-${local.account_id}-${local.region}"
  log_bucket_name          = "${local.name}-logs-${local.account_id}-${local.region}"
  manager_token_parameter  = "${local.parameter_prefix}/manager-token"
  worker_token_parameter   = "${local.parameter_prefix}/worker-token"
  bootstrap_parameter_base = "${local.parameter_prefix}/bootstrap-"
}

module "kms" {
  source = "../../modules/kms"

  name               = local.name
  log_group_prefixes = ["/slipway/${var.environment}/", "/aws/rds/instance/${local.name}/"]
}

module "logs" {
  source = "../../modules/log-bucket"

  bucket_name   = local.log_bucket_name
  force_destroy = var.force_destroy_storage
}

module "network" {
  source = "../../modules/network"

  name                 = local.name
  cidr                 = var.vpc_cidr
  azs                  = var.availability_zones
  single_nat_gateway   = var.single_nat_gateway
  flow_logs_bucket_arn = module.logs.bucket_arn
  flow_logs_prefix     = module.logs.flow_logs_prefix
}

module "security_groups" {
  source = "../../modules/security-groups"

  name              = local.name
  vpc_id            = module.network.vpc_id
  alb_ingress_cidrs = var.alb_ingress_cidrs
  api_port          = local.api_port
}

module "endpoints" {
  source = "../../modules/vpc-endpoints"

  name                    = local.name
  vpc_id                  = module.network.vpc_id
  subnet_ids              = module.network.private_subnet_ids
  route_table_ids         = module.network.private_route_table_ids
  allowed_security_groups = { "the swarm nodes" = module.security_groups.nodes_security_group_id }
  interface_services      = var.enable_interface_endpoints ? ["ecr.api", "ecr.dkr", "secretsmanager", "ssm", "ssmmessages", "ec2messages", "logs", "sts", "ec2"] : []
}

module "archives" {
  source = "../../modules/archives"

  bucket_name                        = local.archive_bucket_name
  kms_key_arn                        = module.kms.key_arn
  noncurrent_version_expiration_days = var.archive_noncurrent_days
  access_log_bucket_name             = module.logs.bucket_name
  access_log_prefix                  = module.logs.s3_access_prefix
  force_destroy                      = var.force_destroy_storage
}

module "ecr" {
  source = "../../modules/ecr"

  name                   = local.name
  kms_key_arn            = module.kms.key_arn
  untagged_expiry_days   = var.ecr_untagged_expiry_days
  image_writer_role_arns = [module.iam.worker_role_arn]
  force_delete           = var.force_destroy_storage
}

module "database" {
  source = "../../modules/rds"

  name                  = local.name
  subnet_ids            = module.network.database_subnet_ids
  security_group_id     = module.security_groups.database_security_group_id
  kms_key_arn           = module.kms.key_arn
  instance_class        = var.db_instance_class
  multi_az              = var.db_multi_az
  backup_retention_days = var.db_backup_retention_days
  deletion_protection   = var.db_deletion_protection
}

module "secrets" {
  source = "../../modules/secrets"

  name        = local.name
  kms_key_arn = module.kms.key_arn
}

module "iam" {
  source = "../../modules/iam"

  name                     = local.name
  kms_key_arn              = module.kms.key_arn
  archive_bucket_arn       = module.archives.bucket_arn
  archive_prefix           = module.archives.archive_prefix
  function_repository_arns = module.ecr.function_repository_arns
  platform_repository_arn  = module.ecr.platform_repository_arn
  api_node_group           = var.api_node_group

  api_secret_arns       = [module.database.master_user_secret_arn, module.secrets.secret_arns["secrets-key"]]
  worker_secret_arns    = [module.database.master_user_secret_arn, module.secrets.secret_arns["secrets-key"]]
  scheduler_secret_arns = [module.database.master_user_secret_arn]

  manager_token_parameter_name = local.manager_token_parameter
  worker_token_parameter_name  = local.worker_token_parameter
  bootstrap_parameter_prefix   = local.bootstrap_parameter_base
  services_log_group_arn       = module.cluster.services_log_group_arn
}

module "alb" {
  source = "../../modules/alb"

  name                = local.name
  vpc_id              = module.network.vpc_id
  public_subnet_ids   = module.network.public_subnet_ids
  security_group_id   = module.security_groups.alb_security_group_id
  certificate_arn     = var.certificate_arn
  api_port            = local.api_port
  deletion_protection = var.alb_deletion_protection
  access_logs_bucket  = module.logs.bucket_name
  access_logs_prefix  = module.logs.alb_prefix
}

module "cluster" {
  source = "../../modules/cluster"

  name              = local.name
  subnet_ids        = module.network.private_subnet_ids
  security_group_id = module.security_groups.nodes_security_group_id
  vpc_cidr          = module.network.vpc_cidr
  database_cidrs    = module.network.database_subnet_cidrs
  kms_key_arn       = module.kms.key_arn

  manager_instance_profile_arn = module.iam.manager_instance_profile_arn
  worker_instance_profile_arn  = module.iam.worker_instance_profile_arn
  manager_token_parameter_name = local.manager_token_parameter
  worker_token_parameter_name  = local.worker_token_parameter
  bootstrap_parameter_prefix   = local.bootstrap_parameter_base
  services_log_group_name      = local.services_log_group_name

  manager_count         = var.manager_count
  manager_instance_type = var.manager_instance_type
  worker_count          = var.worker_count
  worker_instance_type  = var.worker_instance_type

  api_node_group        = var.api_node_group
  api_target_group_arns = [module.alb.api_target_group_arn]
  service_role_arns = {
    api       = module.iam.api_role_arn
    worker    = module.iam.worker_role_arn
    scheduler = module.iam.scheduler_role_arn
  }

  function_egress             = var.function_egress
  function_egress_allow_cidrs = var.function_egress_allow_cidrs

  tags = local.tags
}
