variable "name" {
  description = "Prefix for resource names."
  type        = string
}

variable "vpc_id" {
  description = "The VPC the endpoints go into."
  type        = string
}

variable "subnet_ids" {
  description = "Subnets for the interface endpoints' network interfaces (the nodes' private subnets)."
  type        = list(string)
}

variable "route_table_ids" {
  description = "Route tables that get the S3 gateway endpoint."
  type        = list(string)
}

variable "allowed_security_groups" {
  description = "Security groups allowed to reach the interface endpoints on 443, by a name known at plan time (the ids may not be)."
  type        = map(string)
}

variable "interface_services" {
  description = <<-EOT
    AWS services to reach through interface endpoints (each costs about 7.3 USD a month per
    zone). ecr.api/ecr.dkr: image pushes and pulls; secretsmanager: the services' secrets at
    start; ssm/ssmmessages/ec2messages: Session Manager and the swarm join tokens; logs: the
    awslogs driver; sts: the services' AssumeRole; ec2: the join script's DescribeInstances.
    An empty list keeps only the free S3 gateway endpoint (everything else goes through NAT).
  EOT
  type        = list(string)
  default     = ["ecr.api", "ecr.dkr", "secretsmanager", "ssm", "ssmmessages", "ec2messages", "logs", "sts", "ec2"]
}
