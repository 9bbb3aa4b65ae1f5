variable "name" {
  description = "Prefix of the secrets' names (<name>/<key>)."
  type        = string
}

variable "kms_key_arn" {
  description = "The key the secrets are encrypted with."
  type        = string
}

variable "secrets" {
  description = "Secrets to create (name suffix => description). Values are put by the operator, never by Terraform."
  type        = map(string)
  default = {
    "secrets-key" = "SLIPWAY_SECRETS_KEY for slipway-api and slipway-worker: 32 bytes, hex (openssl rand -hex 32). Seals git bindings' secrets; never rotate without re-creating the bindings."
  }
}

variable "recovery_window_in_days" {
  description = "How long a deleted secret can be restored (0 deletes at once)."
  type        = number
  default     = 7
}
