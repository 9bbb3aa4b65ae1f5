output "bucket_name" {
  description = "The archive bucket's name (SLIPWAY_ARCHIVE_STORE=s3://<name>)."
  value       = aws_s3_bucket.this.bucket
}

output "bucket_arn" {
  description = "The archive bucket's ARN."
  value       = aws_s3_bucket.this.arn
}

output "archive_prefix" {
  description = "The key prefix Slipway writes archives under."
  value       = var.archive_prefix
}
