output "address" {
  description = "The database's host name."
  value       = aws_db_instance.this.address
}

output "endpoint" {
  description = "host:port of the database."
  value       = aws_db_instance.this.endpoint
}

output "port" {
  description = "The database's port."
  value       = aws_db_instance.this.port
}

output "database_name" {
  description = "The database Slipway uses."
  value       = aws_db_instance.this.db_name
}

output "master_username" {
  description = "The master user's name."
  value       = aws_db_instance.this.username
}

output "master_user_secret_arn" {
  description = "ARN of the Secrets Manager secret RDS keeps the master credentials in ({\"username\", \"password\"}); the value is never output."
  value       = aws_db_instance.this.master_user_secret[0].secret_arn
}

output "instance_arn" {
  description = "The DB instance's ARN."
  value       = aws_db_instance.this.arn
}
