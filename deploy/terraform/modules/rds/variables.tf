variable "name" {
  description = "The DB instance identifier and name prefix."
  type        = string
}

variable "subnet_ids" {
  description = "Database subnets (at least two zones)."
  type        = list(string)
}

variable "security_group_id" {
  description = "The database security group (admits the swarm nodes' group only)."
  type        = string
}

variable "kms_key_arn" {
  description = "Key for storage, the master-password secret, Performance Insights and the exported logs."
  type        = string
}

variable "engine_version" {
  description = "PostgreSQL version; a major version only (\"15\") lets RDS pick and upgrade the minor."
  type        = string
  default     = "15"

  validation {
    condition     = can(regex("^15(\\.[0-9]+)?$", var.engine_version))
    error_message = "Slipway is deployed on PostgreSQL 15 here (parameter group family postgres15)."
  }
}

variable "instance_class" {
  description = "DB instance class."
  type        = string
  default     = "db.t4g.medium"
}

variable "allocated_storage" {
  description = "Initial storage in GiB."
  type        = number
  default     = 20
}

variable "max_allocated_storage" {
  description = "Storage autoscaling ceiling in GiB."
  type        = number
  default     = 100
}

variable "port" {
  description = "PostgreSQL port."
  type        = number
  default     = 5432
}

variable "database_name" {
  description = "The database Slipway uses."
  type        = string
  default     = "slipway"
}

variable "master_username" {
  description = "The master user's name (its password lives only in Secrets Manager)."
  type        = string
  default     = "slipway"
}

variable "multi_az" {
  description = "A synchronous standby in a second zone (doubles the instance cost)."
  type        = bool
  default     = true
}

variable "backup_retention_days" {
  description = "Automated backup retention (1–35 days)."
  type        = number
  default     = 7

  validation {
    condition     = var.backup_retention_days >= 1 && var.backup_retention_days <= 35
    error_message = "backup_retention_days must be between 1 and 35."
  }
}

variable "backup_window" {
  description = "Daily backup window (UTC)."
  type        = string
  default     = "02:00-02:30"
}

variable "maintenance_window" {
  description = "Weekly maintenance window (UTC); must not overlap the backup window."
  type        = string
  default     = "sun:04:00-sun:05:00"
}

variable "deletion_protection" {
  description = "Refuse to delete the instance (switch off, apply, then destroy)."
  type        = bool
  default     = true
}

variable "apply_immediately" {
  description = "Apply modifications now instead of in the maintenance window."
  type        = bool
  default     = false
}

variable "performance_insights_enabled" {
  description = "Performance Insights (7 days, free tier retention)."
  type        = bool
  default     = true
}

variable "log_retention_days" {
  description = "Retention of the exported PostgreSQL logs."
  type        = number
  default     = 365
}
