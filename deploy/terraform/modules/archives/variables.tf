variable "bucket_name" {
  description = "The archive bucket's (globally unique) name; Slipway gets SLIPWAY_ARCHIVE_STORE=s3://<name>."
  type        = string
}

variable "kms_key_arn" {
  description = "The customer-managed key archives are encrypted with."
  type        = string
}

variable "archive_prefix" {
  description = "The prefix Slipway stores archives under (shared/src/store: functions/<uuid>/v<N>.tar.gz)."
  type        = string
  default     = "functions/"
}

variable "noncurrent_version_expiration_days" {
  description = "How long an archive Slipway deleted (or an overwritten version) stays recoverable."
  type        = number
  default     = 30
}

variable "access_log_bucket_name" {
  description = "Bucket receiving this bucket's server access logs."
  type        = string
}

variable "access_log_prefix" {
  description = "Prefix for this bucket's access logs in the log bucket (no trailing slash)."
  type        = string
  default     = "s3-access"
}

variable "force_destroy" {
  description = "Let terraform destroy delete the bucket with archives (and their versions) in it."
  type        = bool
  default     = false
}
