variable "name" {
  description = "Prefix for every resource name, e.g. slipway-example."
  type        = string
}

variable "cidr" {
  description = "The VPC's IPv4 range. A /16 leaves room for every tier (see locals in main.tf)."
  type        = string
  default     = "10.40.0.0/16"

  validation {
    condition     = can(cidrhost(var.cidr, 0)) && tonumber(split("/", var.cidr)[1]) <= 16
    error_message = "cidr must be a valid IPv4 range of /16 or larger."
  }
}

variable "azs" {
  description = "Availability zones by name, e.g. [\"eu-central-1a\", \"eu-central-1b\"] (RDS needs two)."
  type        = list(string)

  validation {
    condition     = length(var.azs) >= 2 && length(var.azs) <= 4 && length(distinct(var.azs)) == length(var.azs)
    error_message = "azs must name 2 to 4 distinct zones."
  }
}

variable "single_nat_gateway" {
  description = "One NAT gateway for all zones (cheaper; egress stops if that zone fails) instead of one per zone."
  type        = bool
  default     = false
}

variable "flow_logs_bucket_arn" {
  description = "ARN of the S3 bucket VPC flow logs are delivered to (its policy must admit delivery.logs.amazonaws.com)."
  type        = string
}

variable "flow_logs_prefix" {
  description = "Key prefix for flow logs in that bucket, without a trailing slash."
  type        = string
  default     = "vpc-flow-logs"
}

variable "flow_log_traffic_type" {
  description = "ACCEPT, REJECT or ALL."
  type        = string
  default     = "ALL"

  validation {
    condition     = contains(["ACCEPT", "REJECT", "ALL"], var.flow_log_traffic_type)
    error_message = "flow_log_traffic_type must be ACCEPT, REJECT or ALL."
  }
}
