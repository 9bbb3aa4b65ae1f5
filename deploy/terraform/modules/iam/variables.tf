variable "name" {
  description = "Prefix of the role names: <name>-manager-node, <name>-worker-node, <name>-api, <name>-worker, <name>-scheduler."
  type        = string
}

variable "kms_key_arn" {
  description = "The platform key (archives, secrets, join tokens)."
  type        = string
}

variable "archive_bucket_arn" {
  description = "The archive bucket."
  type        = string
}

variable "archive_prefix" {
  description = "The key prefix Slipway keeps archives under."
  type        = string
  default     = "functions/"
}

variable "function_repository_arns" {
  description = "ECR repositories (and repository-name patterns) the worker pushes function images to."
  type        = list(string)
}

variable "platform_repository_arn" {
  description = "The repository of Slipway's own image, which the nodes pull."
  type        = string
}

variable "api_secret_arns" {
  description = "Secrets slipway-api reads at start (the database credentials, SLIPWAY_SECRETS_KEY)."
  type        = list(string)
}

variable "worker_secret_arns" {
  description = "Secrets slipway-worker reads at start (the database credentials, SLIPWAY_SECRETS_KEY)."
  type        = list(string)
}

variable "scheduler_secret_arns" {
  description = "Secrets slipway-scheduler reads at start (the database credentials)."
  type        = list(string)
}

variable "manager_token_parameter_name" {
  description = "SSM parameter holding the swarm manager join token (SecureString), starting with /."
  type        = string

  validation {
    condition     = startswith(var.manager_token_parameter_name, "/")
    error_message = "Parameter names must be absolute (start with /)."
  }
}

variable "worker_token_parameter_name" {
  description = "SSM parameter holding the swarm worker join token (SecureString), starting with /."
  type        = string

  validation {
    condition     = startswith(var.worker_token_parameter_name, "/")
    error_message = "Parameter names must be absolute (start with /)."
  }
}

variable "bootstrap_parameter_prefix" {
  description = "Name prefix of the parameter the first manager creates to claim the swarm's bootstrap."
  type        = string

  validation {
    condition     = startswith(var.bootstrap_parameter_prefix, "/")
    error_message = "Parameter names must be absolute (start with /)."
  }
}

variable "services_log_group_arn" {
  description = "The CloudWatch log group the services' containers log to (awslogs driver, run by dockerd with the node's role)."
  type        = string
}

variable "api_node_group" {
  description = "Which nodes run slipway-api (and may assume its role): manager or worker."
  type        = string
  default     = "manager"

  validation {
    condition     = contains(["manager", "worker"], var.api_node_group)
    error_message = "api_node_group must be manager or worker."
  }
}
