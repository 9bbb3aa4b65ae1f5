variable "bucket_name" {
  description = "The log bucket's (globally unique) name."
  type        = string
}

variable "expiration_days" {
  description = "Days after which log objects are deleted."
  type        = number
  default     = 90
}

variable "force_destroy" {
  description = "Let terraform destroy delete the bucket with its logs in it."
  type        = bool
  default     = false
}

variable "alb_prefix" {
  description = "Prefix for load balancer access logs (no trailing slash)."
  type        = string
  default     = "alb"
}

variable "s3_access_prefix" {
  description = "Prefix for S3 server access logs (no trailing slash)."
  type        = string
  default     = "s3-access"
}

variable "flow_logs_prefix" {
  description = "Prefix for VPC flow logs (no trailing slash)."
  type        = string
  default     = "vpc-flow-logs"
}

variable "elb_legacy_account_principal" {
  description = "Also admit the regional ELB account (regions opened before August 2022). Set false in newer regions, where that account does not exist and the lookup fails."
  type        = bool
  default     = true
}
