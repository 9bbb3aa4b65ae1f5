variable "name" {
  description = "Prefix for resource names; the alias is alias/<name>."
  type        = string
}

variable "deletion_window_in_days" {
  description = "How long a key scheduled for deletion can still be recovered."
  type        = number
  default     = 30

  validation {
    condition     = var.deletion_window_in_days >= 7 && var.deletion_window_in_days <= 30
    error_message = "deletion_window_in_days must be between 7 and 30."
  }
}

variable "log_group_prefixes" {
  description = "CloudWatch log groups whose names start with one of these may be encrypted with the key, e.g. [\"/slipway/example/\", \"/aws/rds/instance/slipway-example/\"]."
  type        = list(string)
}
