# Slipway's own secrets in Secrets Manager, encrypted with the platform key. Terraform creates
# the secret but never its value: the operator puts the value once (README, step 3), so it
# never enters Terraform's state or outputs. The database password is not here: RDS manages
# that one (modules/rds).

resource "aws_secretsmanager_secret" "this" {
  # checkov:skip=CKV2_AWS_57:SLIPWAY_SECRETS_KEY seals git webhook secrets and clone credentials (AES-256-GCM); Slipway cannot re-seal them under a new key, so an automatic rotation would make every stored binding unreadable.
  for_each = var.secrets

  name                    = "${var.name}/${each.key}"
  description             = each.value
  kms_key_id              = var.kms_key_arn
  recovery_window_in_days = var.recovery_window_in_days

  tags = { Name = "${var.name}/${each.key}" }
}
