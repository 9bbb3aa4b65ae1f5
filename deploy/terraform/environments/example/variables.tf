variable "region" {
  description = "AWS region."
  type        = string
  default     = "eu-central-1"
}

variable "environment" {
  description = "Environment name: resources are named slipway-<environment>."
  type        = string
  default     = "example"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,15}$", var.environment))
    error_message = "environment must be 2–16 characters of a-z, 0-9 and -, starting with a letter."
  }
}

variable "tags" {
  description = "Extra tags for every resource."
  type        = map(string)
  default     = {}
}

# --- network ------------------------------------------------------------------------------

variable "vpc_cidr" {
  description = "The VPC's range (/16)."
  type        = string
  default     = "10.40.0.0/16"
}

variable "availability_zones" {
  description = "Zones of var.region to use, by name (two or more; RDS needs two)."
  type        = list(string)
  default     = ["eu-central-1a", "eu-central-1b"]
}

variable "single_nat_gateway" {
  description = "One NAT gateway instead of one per zone (cheaper, one zone's outage stops egress)."
  type        = bool
  default     = true
}

variable "enable_interface_endpoints" {
  description = "Interface endpoints for ECR, Secrets Manager, SSM, CloudWatch Logs, STS and EC2 (about 7.3 USD/month each per zone); off: only the free S3 gateway endpoint, the rest through NAT."
  type        = bool
  default     = true
}

variable "alb_ingress_cidrs" {
  description = "Who may reach the API (443, and 80 for the redirect)."
  type        = list(string)
  default     = ["0.0.0.0/0"]
}

# --- API endpoint ---------------------------------------------------------------------------

variable "certificate_arn" {
  description = "ACM certificate (same region) for the API's host name."
  type        = string
}

variable "api_domain" {
  description = "The API's host name (a DNS record pointing at the load balancer is yours to make); empty: the load balancer's own name is used in api_url, and TLS will not match it."
  type        = string
  default     = ""
}

variable "alb_deletion_protection" {
  description = "Deletion protection of the load balancer."
  type        = bool
  default     = true
}

# --- cluster ------------------------------------------------------------------------------

variable "manager_count" {
  description = "Swarm managers (odd)."
  type        = number
  default     = 3
}

variable "manager_instance_type" {
  description = "Instance type of the managers (api, scheduler)."
  type        = string
  default     = "t3.small"
}

variable "worker_count" {
  description = "Swarm workers (slipway-worker: builds and functions)."
  type        = number
  default     = 2
}

variable "worker_instance_type" {
  description = "Instance type of the workers."
  type        = string
  default     = "t3.large"
}

variable "api_node_group" {
  description = "Which nodes run slipway-api: manager (default), or worker while functions are reached at addresses local to the engine that runs them (see README, Known gaps)."
  type        = string
  default     = "manager"
}

variable "function_egress" {
  description = "What functions may reach: none, or public (the internet, never private ranges, metadata, the database or swarm)."
  type        = string
  default     = "none"
}

variable "function_egress_allow_cidrs" {
  description = "Destinations functions may reach in either mode."
  type        = list(string)
  default     = []
}

# --- database -----------------------------------------------------------------------------

variable "db_instance_class" {
  description = "RDS instance class."
  type        = string
  default     = "db.t4g.medium"
}

variable "db_multi_az" {
  description = "A standby in a second zone (doubles the database cost)."
  type        = bool
  default     = true
}

variable "db_backup_retention_days" {
  description = "Automated backup retention."
  type        = number
  default     = 7
}

variable "db_deletion_protection" {
  description = "Deletion protection of the database (switch off, apply, then destroy)."
  type        = bool
  default     = true
}

# --- storage ------------------------------------------------------------------------------

variable "archive_noncurrent_days" {
  description = "How long archives Slipway deleted stay recoverable."
  type        = number
  default     = 30
}

variable "ecr_untagged_expiry_days" {
  description = "Days after which untagged images are expired (only untagged ones ever are)."
  type        = number
  default     = 14
}

variable "force_destroy_storage" {
  description = "Let terraform destroy empty the buckets and repositories (throwaway environments only)."
  type        = bool
  default     = false
}
