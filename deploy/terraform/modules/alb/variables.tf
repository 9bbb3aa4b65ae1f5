variable "name" {
  description = "Load balancer name (at most 32 characters are used)."
  type        = string
}

variable "vpc_id" {
  description = "The VPC."
  type        = string
}

variable "public_subnet_ids" {
  description = "Public subnets, one per zone."
  type        = list(string)
}

variable "security_group_id" {
  description = "The load balancer's security group."
  type        = string
}

variable "certificate_arn" {
  description = "ACM certificate for the HTTPS listener (the API's host name)."
  type        = string

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:acm:", var.certificate_arn))
    error_message = "certificate_arn must be an ACM certificate ARN."
  }
}

variable "ssl_policy" {
  description = "TLS policy: TLS 1.3 and 1.2 with forward-secret AEAD ciphers only."
  type        = string
  default     = "ELBSecurityPolicy-TLS13-1-2-Res-2021-06"
}

variable "api_port" {
  description = "The port slipway-api listens on, on the nodes."
  type        = number
  default     = 8080
}

variable "idle_timeout" {
  description = "Seconds a connection may stay silent (SSE build logs, slow invocations: SLIPWAY_INVOKE_TIMEOUT is 60 s)."
  type        = number
  default     = 120
}

variable "deletion_protection" {
  description = "Refuse to delete the load balancer (switch off before terraform destroy)."
  type        = bool
  default     = true
}

variable "access_logs_bucket" {
  description = "Bucket for access logs (SSE-S3, with a policy admitting ELB log delivery)."
  type        = string
}

variable "access_logs_prefix" {
  description = "Prefix for access logs."
  type        = string
  default     = "alb"
}

variable "web_acl_arn" {
  description = "Optional WAFv2 web ACL to associate (tune its body-size rules for archive uploads first)."
  type        = string
  default     = null
}
