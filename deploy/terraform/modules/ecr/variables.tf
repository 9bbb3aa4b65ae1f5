variable "name" {
  description = "Repository name prefix: <name>/slipway and <name>/functions."
  type        = string
}

variable "kms_key_arn" {
  description = "The customer-managed key images are encrypted with."
  type        = string
}

variable "untagged_expiry_days" {
  description = "Days after which UNTAGGED images are expired. Keep it well above SLIPWAY_VERIFY_EVERY (the digest sweep's period) so that a drifted, untagged-but-pinned digest is reported before it is deleted."
  type        = number
  default     = 14

  validation {
    condition     = var.untagged_expiry_days >= 1
    error_message = "untagged_expiry_days must be at least 1."
  }
}

variable "image_writer_role_arns" {
  description = "IAM role ARNs allowed to push to the functions repository (Slipway's worker role); everyone else is denied PutImage there. Empty: no repository policy."
  type        = list(string)
  default     = []
}

variable "force_delete" {
  description = "Let terraform destroy delete repositories that still hold images."
  type        = bool
  default     = false
}
