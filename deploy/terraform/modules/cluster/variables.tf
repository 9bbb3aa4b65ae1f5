variable "name" {
  description = "Cluster name: resource prefix and the slipway:cluster tag the join script looks managers up by."
  type        = string
}

variable "subnet_ids" {
  description = "Private subnets for the nodes."
  type        = list(string)
}

variable "security_group_id" {
  description = "The nodes' security group."
  type        = string
}

variable "vpc_cidr" {
  description = "The VPC's range (closed to functions)."
  type        = string
}

variable "database_cidrs" {
  description = "The database subnets (always closed to functions)."
  type        = list(string)
}

variable "database_port" {
  description = "PostgreSQL's port (always closed to functions)."
  type        = number
  default     = 5432
}

variable "kms_key_arn" {
  description = "The platform key (join-token parameters, the services' log group)."
  type        = string
}

variable "manager_instance_profile_arn" {
  description = "Instance profile of the managers."
  type        = string
}

variable "worker_instance_profile_arn" {
  description = "Instance profile of the workers."
  type        = string
}

variable "manager_token_parameter_name" {
  description = "SSM parameter for the manager join token."
  type        = string
}

variable "worker_token_parameter_name" {
  description = "SSM parameter for the worker join token."
  type        = string
}

variable "bootstrap_parameter_prefix" {
  description = "Name prefix of the parameter the first manager creates to claim the bootstrap (a per-cluster suffix is added)."
  type        = string
}

variable "services_log_group_name" {
  description = "CloudWatch log group for Slipway's services (the stack's awslogs driver)."
  type        = string
}

variable "log_retention_days" {
  description = "Retention of the services' logs."
  type        = number
  default     = 365
}

variable "ami_id" {
  description = "AMI to use instead of the newest Amazon Linux 2023 (pin it in production)."
  type        = string
  default     = null
}

variable "architecture" {
  description = "x86_64 or arm64 (instance types must match)."
  type        = string
  default     = "x86_64"

  validation {
    condition     = contains(["x86_64", "arm64"], var.architecture)
    error_message = "architecture must be x86_64 or arm64."
  }
}

variable "manager_count" {
  description = "Managers: 3 (an odd number) keeps the swarm's quorum through the loss of one."
  type        = number
  default     = 3

  validation {
    condition     = var.manager_count % 2 == 1
    error_message = "manager_count must be odd (1, 3, 5)."
  }
}

variable "manager_instance_type" {
  description = "Instance type of the managers."
  type        = string
  default     = "t3.small"
}

variable "manager_volume_size" {
  description = "Root volume of the managers, GiB."
  type        = number
  default     = 30
}

variable "worker_count" {
  description = "Workers (they build images and run functions)."
  type        = number
  default     = 2
}

variable "worker_max_extra" {
  description = "How far above worker_count the workers' ASG may be scaled by hand."
  type        = number
  default     = 4
}

variable "worker_instance_type" {
  description = "Instance type of the workers."
  type        = string
  default     = "t3.large"
}

variable "worker_volume_size" {
  description = "Root volume of the workers, GiB (images, build cache)."
  type        = number
  default     = 100
}

variable "api_target_group_arns" {
  description = "Target groups the nodes running slipway-api are registered in."
  type        = list(string)
}

variable "api_node_group" {
  description = "Which ASG runs slipway-api and is registered in the target group: manager or worker."
  type        = string
  default     = "manager"

  validation {
    condition     = contains(["manager", "worker"], var.api_node_group)
    error_message = "api_node_group must be manager or worker."
  }
}

variable "swarm_address_pool" {
  description = "Address pool for swarm overlay networks; must not overlap the VPC."
  type        = string
  default     = "172.24.0.0/16"
}

variable "function_address_pool" {
  description = "dockerd's default-address-pools base: local bridges, the function bridges among them; must not overlap the VPC."
  type        = string
  default     = "172.20.0.0/16"
}

variable "function_bridges" {
  description = "Bridge interfaces whose containers the firewall treats as functions (iptables patterns: slw+ is Slipway's per-function bridges, docker0 the default bridge)."
  type        = list(string)
  default     = ["slw+", "docker0"]
}

variable "function_egress" {
  description = "none: functions reach nothing but EGRESS_ALLOW; public: also the internet (never private ranges, the VPC, metadata, the database, swarm)."
  type        = string
  default     = "none"

  validation {
    condition     = contains(["none", "public"], var.function_egress)
    error_message = "function_egress must be none or public."
  }
}

variable "function_egress_allow_cidrs" {
  description = "Destinations functions may reach in either mode (never the metadata service, the database or swarm ports)."
  type        = list(string)
  default     = []
}

variable "tags" {
  description = "Tags for instances and volumes (provider default_tags do not reach what an ASG launches)."
  type        = map(string)
  default     = {}
}

variable "service_role_arns" {
  description = "Duty roles of Slipway's services (api, worker, scheduler): the user-data writes an AWS profile slipway-<service> for each into /etc/slipway/aws/config."
  type        = map(string)
}
