output "alb_dns_name" {
  description = "The load balancer's DNS name: point api_domain here (CNAME or Route 53 alias)."
  value       = module.alb.dns_name
}

output "alb_zone_id" {
  description = "The load balancer's hosted zone id, for a Route 53 alias record."
  value       = module.alb.zone_id
}

output "api_url" {
  description = "SLIPWAY_URL for clients."
  value       = "https://${var.api_domain != "" ? var.api_domain : module.alb.dns_name}"
}

output "api_target_group_arn" {
  description = "The target group slipway-api's nodes are registered in (port 8080)."
  value       = module.alb.api_target_group_arn
}

output "region" {
  description = "AWS_REGION for the services."
  value       = local.region
}

output "ecr_registry" {
  description = "The registry host (docker login, SLIPWAY_REGISTRY's host)."
  value       = module.ecr.registry_host
}

output "ecr_repository_url" {
  description = "Repository for function images."
  value       = module.ecr.functions_repository_url
}

output "ecr_platform_repository_url" {
  description = "Repository for Slipway's own image (the stack's services run it)."
  value       = module.ecr.platform_repository_url
}

output "archive_bucket_name" {
  description = "The archive bucket (SLIPWAY_ARCHIVE_STORE=s3://<name>)."
  value       = module.archives.bucket_name
}

output "log_bucket_name" {
  description = "Bucket with the ALB, S3 access and VPC flow logs."
  value       = module.logs.bucket_name
}

output "db_endpoint" {
  description = "host:port of PostgreSQL."
  value       = module.database.endpoint
}

output "db_address" {
  description = "PostgreSQL's host name."
  value       = module.database.address
}

output "db_name" {
  description = "The database Slipway uses."
  value       = module.database.database_name
}

output "secret_arns" {
  description = "Secrets Manager ARNs (never the values): database = RDS-managed {username,password}; secrets-key = SLIPWAY_SECRETS_KEY, put by you."
  value = merge(
    { database = module.database.master_user_secret_arn },
    module.secrets.secret_arns,
  )
}

output "ssm_parameter_names" {
  description = "SSM parameters of the swarm (SecureString join tokens; the bootstrap claim lives outside Terraform's state)."
  value = merge(
    { for role, name in module.cluster.join_token_parameter_names : "${role}_join_token" => name },
    { bootstrap_claim = module.cluster.bootstrap_parameter_name },
  )
}

output "manager_instance_ids" {
  description = "Running managers at apply time (aws ssm start-session --target <id>); re-run terraform refresh once the ASG has launched them."
  value       = module.cluster.manager_instance_ids
}

output "manager_private_ips" {
  description = "Private addresses of the running managers at apply time."
  value       = module.cluster.manager_private_ips
}

output "manager_asg_name" {
  description = "The managers' auto-scaling group."
  value       = module.cluster.manager_asg_name
}

output "worker_asg_name" {
  description = "The workers' auto-scaling group."
  value       = module.cluster.worker_asg_name
}

output "service_role_arns" {
  description = "Roles the services assume (role_arn in their AWS profile, credential_source = Ec2InstanceMetadata)."
  value = {
    api       = module.iam.api_role_arn
    worker    = module.iam.worker_role_arn
    scheduler = module.iam.scheduler_role_arn
  }
}

output "services_log_group_name" {
  description = "CloudWatch log group for the services (awslogs-group)."
  value       = module.cluster.services_log_group_name
}

output "database" {
  description = "Where the services connect (DATABASE_URL is built at start from this and the database secret; sslmode=require: RDS refuses plain connections)."
  value = {
    host    = module.database.address
    port    = module.database.port
    name    = module.database.database_name
    sslmode = "require"
  }
}

output "stack_environment" {
  description = "Non-secret SLIPWAY_* environment for deploy/swarm/stack.yml. DATABASE_URL and SLIPWAY_SECRETS_KEY come from secret_arns at start. SLIPWAY_REGISTRY is the functions repository's URL: each function's repository is created below it."
  value = {
    AWS_REGION            = local.region
    SLIPWAY_BIND          = "0.0.0.0:${local.api_port}"
    SLIPWAY_ARCHIVE_STORE = "s3://${module.archives.bucket_name}"
    SLIPWAY_REGISTRY_KIND = "ecr"
    SLIPWAY_REGISTRY      = module.ecr.functions_repository_url
  }
}
