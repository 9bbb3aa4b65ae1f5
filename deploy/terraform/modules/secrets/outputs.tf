output "secret_arns" {
  description = "ARNs of the secrets by name suffix (the values are never output)."
  value       = { for key, secret in aws_secretsmanager_secret.this : key => secret.arn }
}

output "secret_names" {
  description = "Full names of the secrets by name suffix."
  value       = { for key, secret in aws_secretsmanager_secret.this : key => secret.name }
}
